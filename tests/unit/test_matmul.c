/* test_matmul.c - the matrix products (kernels/cpu/matmul.h) and the thread pool under
 * them (threadpool.h).
 *
 * matmul is compared with a double-precision reference made from dequantized weights
 * and q8a-dequantized activations, for every type, at every SIMD level, on shapes
 * that leave partial tiles (T and OC not multiples of 4), with and without a pool.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/matmul.h"
#include "cpu/quant.h"
#include "cpu/simd.h"
#include "cpu/threadpool.h"

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static float frand(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((rng_state >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

/* y_ref (T, OC) from the dequantized weights, with activations as the kernels see them. */
static void reference(double *y, const float *x, int T, const void *w, enum tensor_type type,
                      int OC, int C)
{
    float *wd = malloc(sizeof(float) * C), *xd = malloc(sizeof(float) * C);
    block_q8a *xq = malloc(sizeof(block_q8a) * (C / QK));
    size_t row = tensor_row_bytes(type, C);
    for (int t = 0; t < T; t++) {
        const float *xt = x + (size_t)t * C;
        if (type_uses_q8a(type)) {
            quantize_row_q8a(xt, xq, C);
            for (int i = 0; i < C; i++)
                xd[i] = xq[i / QK].d * xq[i / QK].q[i % QK];
        } else {
            memcpy(xd, xt, sizeof(float) * C);
        }
        for (int o = 0; o < OC; o++) {
            dequantize_row(type, (const char *)w + o * row, wd, C);
            double s = 0.0;
            for (int i = 0; i < C; i++)
                s += (double)wd[i] * xd[i];
            y[(size_t)t * OC + o] = s;
        }
    }
    free(wd);
    free(xd);
    free(xq);
}

static void check_shape(enum tensor_type type, int T, int OC, int C, threadpool *pool)
{
    float *x = malloc(sizeof(float) * T * C), *wf = malloc(sizeof(float) * C);
    float *y = malloc(sizeof(float) * T * OC);
    double *ref = malloc(sizeof(double) * T * OC);
    size_t row = tensor_row_bytes(type, C);
    char *w = malloc(row * OC);
    for (int o = 0; o < OC; o++) {
        for (int i = 0; i < C; i++)
            wf[i] = frand();
        quantize_row(type, wf, w + o * row, C);
    }
    for (int i = 0; i < T * C; i++)
        x[i] = frand() * 2.0f;
    for (int level = SIMD_SCALAR; level <= (int)simd_best_level(); level++) {
        simd_set_level((enum simd_level)level);
        reference(ref, x, T, w, type, OC, C);
        matmul(pool, y, x, T, w, type, OC, C);
        for (int i = 0; i < T * OC; i++)
            if (fabs(y[i] - ref[i]) > 1e-3 * (1.0 + fabs(ref[i])))
                fail_msg("%s T=%d OC=%d C=%d level %s: y[%d] = %f, reference %f",
                         tensor_type_info(type)->name, T, OC, C,
                         simd_level_name((enum simd_level)level), i, y[i], ref[i]);
    }
    simd_set_level(simd_best_level());
    free(x);
    free(wf);
    free(y);
    free(ref);
    free(w);
}

static void test_matmul_all_types(void **state)
{
    (void)state;
    const enum tensor_type types[] = {TENSOR_F32, TENSOR_F16, TENSOR_BF16, TENSOR_Q8_0,
                                      TENSOR_Q4_0, TENSOR_Q4_1, TENSOR_Q4_K, TENSOR_Q6_K};
    const int shapes[][3] = {{1, 7, 256}, {3, 33, 512}, {7, 70, 256}, {64, 21, 768}, {5, 130, 2048}};
    threadpool *pools[] = {NULL, threadpool_create(1), threadpool_create(2)};
    for (size_t p = 0; p < 3; p++)
        for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
            for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
                check_shape(types[i], shapes[s][0], shapes[s][1], shapes[s][2], pools[p]);
    threadpool_free(pools[1]);
    threadpool_free(pools[2]);
}

/* Packed matrices (AVX2 and up) give matmul's results; without AVX2 matmul_pack says
 * no and the test checks just that. */
static void check_packed(enum tensor_type type, int T, int OC, int C, threadpool *pool)
{
    float *x = malloc(sizeof(float) * T * C), *wf = malloc(sizeof(float) * C);
    float *y = malloc(sizeof(float) * T * OC), *want = malloc(sizeof(float) * T * OC);
    size_t row = tensor_row_bytes(type, C);
    char *w = malloc(row * OC);
    for (int o = 0; o < OC; o++) {
        for (int i = 0; i < C; i++)
            wf[i] = frand();
        quantize_row(type, wf, w + o * row, C);
    }
    for (int i = 0; i < T * C; i++)
        x[i] = frand();
    packed_matrix *p = matmul_pack(w, type, OC, C);
    if (simd_best_level() < SIMD_AVX2) {
        assert_null(p);
    } else {
        assert_non_null(p);
        matmul(pool, want, x, T, w, type, OC, C);
        matmul_packed(pool, y, x, T, p);
        for (int i = 0; i < T * OC; i++)
            if (fabsf(y[i] - want[i]) > 1e-4f * (1.0f + fabsf(want[i])))
                fail_msg("packed %s T=%d OC=%d C=%d: y[%d] = %f, matmul %f",
                         tensor_type_info(type)->name, T, OC, C, i, y[i], want[i]);
        simd_set_level(SIMD_SCALAR);  /* a lowered level falls back to the original */
        matmul_packed(pool, y, x, T, p);
        simd_set_level(simd_best_level());
        for (int i = 0; i < T * OC; i++)
            assert_true(fabsf(y[i] - want[i]) <= 1e-4f * (1.0f + fabsf(want[i])));
    }
    assert_null(matmul_pack(w, type, OC - 1, C));  /* not a multiple of 8 rows */
    packed_matrix_free(p);
    free(x);
    free(wf);
    free(y);
    free(want);
    free(w);
}

static void test_matmul_packed(void **state)
{
    (void)state;
    const enum tensor_type types[] = {TENSOR_Q8_0, TENSOR_Q4_0, TENSOR_Q4_1};
    const int shapes[][3] = {{1, 8, 32}, {3, 24, 256}, {5, 40, 576}, {9, 64, 128}, {128, 16, 64}};
    threadpool *pool = threadpool_create(2);
    for (size_t i = 0; i < 3; i++)
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            check_packed(types[i], shapes[s][0], shapes[s][1], shapes[s][2], pool);
            check_packed(types[i], shapes[s][0], shapes[s][1], shapes[s][2], NULL);
        }
    assert_null(matmul_pack(NULL, TENSOR_F32, 8, 32));
    threadpool_free(pool);
}

static void test_matmul_small_rows(void **state)
{
    (void)state;
    threadpool *pool = threadpool_create(2);
    check_shape(TENSOR_Q8_0, 2, 32, 32, pool);
    check_shape(TENSOR_Q4_1, 4, 1, 64, pool);
    threadpool_free(pool);
}

/* ---- thread pool ---- */

typedef struct count_job {
    atomic_int *hits;
    atomic_int bad_thread;
    int n_threads;
} count_job;

static void count_task(void *ctx, int task, int n_tasks, int thread)
{
    count_job *job = ctx;
    if (thread < 0 || thread >= job->n_threads || task < 0 || task >= n_tasks)
        atomic_store(&job->bad_thread, 1);
    atomic_fetch_add(&job->hits[task], 1);
}

static void test_threadpool_each_task_once(void **state)
{
    (void)state;
    for (int n_threads = 1; n_threads <= 3; n_threads++) {
        threadpool *pool = threadpool_create(n_threads);
        assert_non_null(pool);
        assert_int_equal(threadpool_size(pool), n_threads);
        const int sizes[] = {0, 1, 2, 5, 64, 1000};
        for (int rep = 0; rep < 200; rep++) {
            int n = sizes[rep % 6];
            atomic_int *hits = calloc(n + 1, sizeof *hits);
            count_job job = {.hits = hits, .n_threads = n_threads};
            threadpool_run(pool, count_task, &job, n);
            for (int i = 0; i < n; i++)
                assert_int_equal(atomic_load(&hits[i]), 1);
            assert_int_equal(atomic_load(&job.bad_thread), 0);
            free(hits);
        }
        threadpool_free(pool);
    }
    atomic_int hits[4] = {0};
    count_job job = {.hits = hits, .n_threads = 1};
    threadpool_run(NULL, count_task, &job, 4);
    for (int i = 0; i < 4; i++)
        assert_int_equal(atomic_load(&hits[i]), 1);
    assert_null(threadpool_create(0));
    threadpool_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matmul_all_types),
        cmocka_unit_test(test_matmul_small_rows),
        cmocka_unit_test(test_matmul_packed),
        cmocka_unit_test(test_threadpool_each_task_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
