/* test_quant.c - weight formats and dot products (kernels/cpu/quant.h).
 *
 * The scalar code is checked against hand-worked blocks and against a float
 * reference built from dequantize_row; every SIMD level is then checked against the
 * scalar level on random data, so a kernel can never drift from the reference.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/quant.h"
#include "cpu/simd.h"

static const enum tensor_type all_types[] = {TENSOR_F32, TENSOR_F16, TENSOR_BF16, TENSOR_Q8_0,
                                             TENSOR_Q4_0, TENSOR_Q4_1, TENSOR_Q4_K, TENSOR_Q6_K};
#define N_TYPES (sizeof all_types / sizeof all_types[0])

static uint64_t rng_state = 88172645463325252ull;
static float frand(void)  /* uniform in [-1, 1) */
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((rng_state >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

static void fill(float *x, int n, float scale)
{
    for (int i = 0; i < n; i++)
        x[i] = frand() * scale;
}

static void test_fp16(void **state)
{
    (void)state;
    assert_int_equal(fp32_to_fp16(1.0f), 0x3c00);
    assert_int_equal(fp32_to_fp16(-2.0f), 0xc000);
    assert_int_equal(fp32_to_fp16(65504.0f), 0x7bff);
    assert_int_equal(fp32_to_fp16(1e6f), 0x7c00);          /* overflow: inf */
    assert_int_equal(fp32_to_fp16(5.9604645e-8f), 0x0001);  /* smallest subnormal */
    assert_true(isnan(fp16_to_fp32(fp32_to_fp16(NAN))));
    assert_true(isinf(fp16_to_fp32(0x7c00)));
    assert_float_equal(fp16_to_fp32(0x3555), 0.33325195f, 0);
    for (int h = 0; h < 0x7c00; h++)  /* every finite half survives the round trip */
        assert_int_equal(fp32_to_fp16(fp16_to_fp32((uint16_t)h)), h);
    assert_int_equal(fp32_to_fp16(1.0f + 1.0f / 2048), 0x3c00);  /* tie to even */
    assert_int_equal(fp32_to_bf16(1.0f), 0x3f80);
    assert_float_equal(bf16_to_fp32(0xc040), -3.0f, 0);
}

/* Blocks worked by hand from the format definitions. */
static void test_known_blocks(void **state)
{
    (void)state;
    float out[256];
    uint8_t q4_0[18] = {0x00, 0x3c};  /* d = 1 */
    q4_0[2] = 0x9f;                   /* elem 0: 0xf - 8 = 7; elem 16: 0x9 - 8 = 1 */
    dequantize_row(TENSOR_Q4_0, q4_0, out, 32);
    assert_float_equal(out[0], 7.0f, 0);
    assert_float_equal(out[16], 1.0f, 0);
    assert_float_equal(out[1], -8.0f, 0);

    uint8_t q4_1[20] = {0x00, 0x40, 0x00, 0xbc};  /* d = 2, m = -1 */
    q4_1[4] = 0x31;                               /* elem 0: 2*1-1 = 1; elem 16: 2*3-1 = 5 */
    dequantize_row(TENSOR_Q4_1, q4_1, out, 32);
    assert_float_equal(out[0], 1.0f, 0);
    assert_float_equal(out[16], 5.0f, 0);
    assert_float_equal(out[2], -1.0f, 0);

    uint8_t q8_0[34] = {0x00, 0x38};  /* d = 0.5 */
    q8_0[2] = (uint8_t)-6;
    dequantize_row(TENSOR_Q8_0, q8_0, out, 32);
    assert_float_equal(out[0], -3.0f, 0);

    /* Q4_K: d = 1, dmin = 0.5; sub-block 0 scale 2 min 4; sub-block 5 scale 33 (low 4 bits
     * 1 in byte 9, top bits 2 in byte 1) min 0. elem 0 = 1*2*3 - 0.5*4 = 4;
     * elem 32 (sub-block 1, scale 0, min 0, high nibble of qs[0]) = 0;
     * elem 160 (sub-block 5: chunk 2, high nibbles of qs[64..95]) = 33 * 7 = 231 */
    uint8_t q4_k[144] = {0};
    q4_k[0] = 0x00; q4_k[1] = 0x3c; q4_k[2] = 0x00; q4_k[3] = 0x38;
    uint8_t *sc = q4_k + 4, *qs = q4_k + 16;
    sc[0] = 2; sc[4] = 4; sc[9] = 0x01; sc[1] = 2 << 6;
    qs[0] = 0x03; qs[64] = 0x70;
    dequantize_row(TENSOR_Q4_K, q4_k, out, 256);
    assert_float_equal(out[0], 4.0f, 0);
    assert_float_equal(out[32], 0.0f, 0);
    assert_float_equal(out[160], 231.0f, 0);
    assert_float_equal(out[1], -2.0f, 0);

    /* Q6_K: d = 1; elem 0 = scale[0] * (ql[0] low | qh[0] bits 0-1 << 4) - 32;
     * elem 64 (row 2: ql[0] high nibble, qh bits 4-5) with scale[4] */
    uint8_t q6_k[210] = {0};
    uint8_t *ql = q6_k, *qh = q6_k + 128;
    int8_t *s6 = (int8_t *)(q6_k + 192);
    q6_k[208] = 0x00; q6_k[209] = 0x3c;
    ql[0] = 0x5a;          /* low 10, high 5 */
    qh[0] = 0x02 | 0x30;   /* elem 0: high bits 2 -> 42; elem 64: high bits 3 -> 53 */
    s6[0] = 3; s6[4] = -1;
    dequantize_row(TENSOR_Q6_K, q6_k, out, 256);
    assert_float_equal(out[0], 3.0f * (42 - 32), 0);
    assert_float_equal(out[64], -1.0f * (53 - 32), 0);
}

static float max_error_allowed(enum tensor_type t)
{
    switch (t) {
    case TENSOR_F32: return 0.0f;
    case TENSOR_F16: return 1e-3f;
    case TENSOR_BF16: return 8e-3f;
    case TENSOR_Q8_0: return 0.01f;
    case TENSOR_Q6_K: return 0.04f;
    default: return 0.15f;  /* 4-bit formats: half a step of 2/15 */
    }
}

static void test_round_trip(void **state)
{
    (void)state;
    enum { N = 512 };
    float x[N], y[N];
    uint8_t buf[N * 4];
    for (size_t i = 0; i < N_TYPES; i++) {
        fill(x, N, 1.0f);
        assert_int_equal(quantize_row(all_types[i], x, buf, N), 0);
        dequantize_row(all_types[i], buf, y, N);
        for (int j = 0; j < N; j++)
            if (fabsf(x[j] - y[j]) > max_error_allowed(all_types[i]))
                fail_msg("%s: elem %d: %f -> %f", tensor_type_info(all_types[i])->name, j, x[j], y[j]);
    }
}

/* vec_dot at the scalar level equals a float dot of the dequantized operands. */
static void test_vec_dot_reference(void **state)
{
    (void)state;
    enum { N = 1024 };
    float w[N], x[N], wd[N], xd[N];
    uint8_t buf[N * 4];
    block_q8a xq[N / QK];
    simd_set_level(SIMD_SCALAR);
    for (size_t i = 0; i < N_TYPES; i++) {
        enum tensor_type t = all_types[i];
        fill(w, N, 1.0f);
        fill(x, N, 3.0f);
        quantize_row(t, w, buf, N);
        dequantize_row(t, buf, wd, N);
        quantize_row_q8a(x, xq, N);
        for (int b = 0; b < N / QK; b++) {
            int sum = 0;
            for (int j = 0; j < QK; j++) {
                xd[b * QK + j] = type_uses_q8a(t) ? xq[b].d * xq[b].q[j] : x[b * QK + j];
                sum += xq[b].q[j];
            }
            assert_float_equal(xq[b].s, xq[b].d * sum, 1e-5);
        }
        double ref = 0.0;
        for (int j = 0; j < N; j++)
            ref += (double)wd[j] * xd[j];
        float got = vec_dot(t, buf, x, xq, N);
        if (fabs(got - ref) > 1e-3 * (1.0 + fabs(ref)))
            fail_msg("%s: vec_dot %f, reference %f", tensor_type_info(t)->name, got, ref);
    }
    simd_set_level(simd_best_level());
}

/* Every SIMD level gives the scalar level's answer (up to summation order). */
static void test_simd_levels_match_scalar(void **state)
{
    (void)state;
    enum { N = 2048 };
    float w[N], x[N];
    uint8_t buf[N * 4];
    block_q8a xq_scalar[N / QK], xq[N / QK];
    for (size_t i = 0; i < N_TYPES; i++) {
        enum tensor_type t = all_types[i];
        fill(w, N, 0.5f);
        fill(x, N, 2.0f);
        quantize_row(t, w, buf, N);
        simd_set_level(SIMD_SCALAR);
        quantize_row_q8a(x, xq_scalar, N);
        float want = vec_dot(t, buf, x, xq_scalar, N);
        for (int level = SIMD_AVX2; level <= (int)simd_best_level(); level++) {
            simd_set_level((enum simd_level)level);
            quantize_row_q8a(x, xq, N);
            assert_memory_equal(xq, xq_scalar, sizeof xq);
            float got = vec_dot(t, buf, x, xq, N);
            if (fabsf(got - want) > 1e-4f * (1.0f + fabsf(want)))
                fail_msg("%s at %s: %f, scalar %f", tensor_type_info(t)->name,
                         simd_level_name((enum simd_level)level), got, want);
        }
    }
    simd_set_level(simd_best_level());
}

static void test_q8a_zero_block(void **state)
{
    (void)state;
    float x[64] = {0};
    block_q8a q[2];
    for (int level = SIMD_SCALAR; level <= (int)simd_best_level(); level++) {
        simd_set_level((enum simd_level)level);
        quantize_row_q8a(x, q, 64);
        assert_float_equal(q[0].d, 0.0f, 0);
        assert_float_equal(q[1].s, 0.0f, 0);
    }
    simd_set_level(simd_best_level());
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fp16),
        cmocka_unit_test(test_known_blocks),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_vec_dot_reference),
        cmocka_unit_test(test_simd_levels_match_scalar),
        cmocka_unit_test(test_q8a_zero_block),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
