/* test_quant.c - weight formats and dot products (kernels/cpu/quant.h, simd.h).
 *
 * The scalar code is checked against hand-worked blocks and against a float
 * reference built from dequantize_row; every SIMD level is then checked against the
 * scalar level on random data, so a kernel can never drift from the reference.
 * Half-float conversions are checked exhaustively where the space is small (every
 * fp16 and bf16 value) and against "nearest representable" on random floats.
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

/* Must run first: CITADEL_SIMD is read once, at the first simd_level() call. */
static void test_simd_env_and_levels(void **state)
{
    (void)state;
    setenv("CITADEL_SIMD", "scalar", 1);
    assert_int_equal(simd_level(), SIMD_SCALAR);
    unsetenv("CITADEL_SIMD");
    enum simd_level best = simd_best_level();
    assert_int_equal(simd_set_level(SIMD_AVX512), best);  /* capped at what the CPU has */
    assert_int_equal(simd_level(), best);
    assert_int_equal(simd_set_level(SIMD_SCALAR), SIMD_SCALAR);
    assert_int_equal(simd_level(), SIMD_SCALAR);
    assert_string_equal(simd_level_name(SIMD_SCALAR), "scalar");
    assert_string_equal(simd_level_name(SIMD_AVX2), "avx2");
    assert_string_equal(simd_level_name(SIMD_AVX512), "avx512");
    simd_set_level(best);
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

static float bits_to_float(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void test_fp16_special_values(void **state)
{
    (void)state;
    assert_int_equal(fp32_to_fp16(0.0f), 0x0000);
    assert_int_equal(fp32_to_fp16(-0.0f), 0x8000);
    assert_true(signbit(fp16_to_fp32(0x8000)) && fp16_to_fp32(0x8000) == 0.0f);
    assert_int_equal(fp32_to_fp16(INFINITY), 0x7c00);
    assert_int_equal(fp32_to_fp16(-INFINITY), 0xfc00);
    assert_true(fp16_to_fp32(0xfc00) == -INFINITY);
    uint16_t nan = fp32_to_fp16(-NAN);
    assert_int_equal(nan & 0x7c00, 0x7c00);
    assert_true((nan & 0x3ff) != 0);
    assert_true(isnan(fp16_to_fp32(0x7e00)) && isnan(fp16_to_fp32(0x7c01)));
    /* the edges of the range, worked from the format: 65519 rounds down to 65504,
     * 65520 is the midpoint to 2^16 and rounds (to even) past the largest half */
    assert_int_equal(fp32_to_fp16(65519.0f), 0x7bff);
    assert_int_equal(fp32_to_fp16(65520.0f), 0x7c00);
    assert_int_equal(fp32_to_fp16(-65520.0f), 0xfc00);
    /* subnormals are multiples of 2^-24 */
    assert_true(fp16_to_fp32(0x0001) == ldexpf(1.0f, -24));
    assert_true(fp16_to_fp32(0x03ff) == ldexpf(1023.0f, -24));
    assert_true(fp16_to_fp32(0x0400) == ldexpf(1.0f, -14));
    assert_int_equal(fp32_to_fp16(ldexpf(1.0f, -25)), 0x0000);         /* tie: to even 0 */
    assert_int_equal(fp32_to_fp16(ldexpf(3.0f, -25)), 0x0002);         /* 1.5 ulp: to even 2 */
    assert_int_equal(fp32_to_fp16(ldexpf(1.0f, -26)), 0x0000);
    assert_int_equal(fp32_to_fp16(ldexpf(2047.0f, -25)), 0x0400);      /* 1023.5: up to normal */
    assert_int_equal(fp32_to_fp16(ldexpf(1.0f, -14)), 0x0400);
    assert_int_equal(fp32_to_fp16(-ldexpf(5.0f, -24)), 0x8005);
    assert_int_equal(fp32_to_fp16(1e-10f), 0x0000);                    /* underflow to zero */
    /* normal rounding: 1 + 3/2048 is a tie between 0x3c01 and 0x3c02, to even */
    assert_int_equal(fp32_to_fp16(1.0f + 3.0f / 2048), 0x3c02);
    assert_int_equal(fp32_to_fp16(bits_to_float(0x3f801001)), 0x3c01);  /* just past a tie */
    assert_int_equal(fp32_to_fp16(2047.5f), 0x6800);                   /* mantissa carry */
    for (int h = 0x8000; h < 0xfc00; h++)  /* the negative halves too */
        assert_int_equal(fp32_to_fp16(fp16_to_fp32((uint16_t)h)), h);
}

/* fp32_to_fp16 returns the nearest half: no neighbour of the result is closer. */
static void test_fp16_is_nearest(void **state)
{
    (void)state;
    for (int i = 0; i < 200000; i++) {
        float f = ldexpf(frand(), (int)(frand() * 20.0f) - 6);  /* 2^-26 .. 2^14 */
        uint16_t h = fp32_to_fp16(f);
        double err = fabs((double)fp16_to_fp32(h) - f);
        for (int step = -1; step <= 1; step += 2) {
            uint16_t nb = (uint16_t)(h + step);
            if ((nb & 0x7fff) >= 0x7c00 || (h & 0x7fff) == 0)
                continue;
            assert_true(err <= fabs((double)fp16_to_fp32(nb) - f));
        }
    }
}

static void test_bf16(void **state)
{
    (void)state;
    for (int h = 0; h < 0x10000; h++) {   /* every bf16 but the nans survives the round trip */
        if ((h & 0x7f80) == 0x7f80 && (h & 0x7f))
            assert_true(isnan(bf16_to_fp32((uint16_t)h)));
        else
            assert_int_equal(fp32_to_bf16(bf16_to_fp32((uint16_t)h)), h);
    }
    assert_int_equal(fp32_to_bf16(-0.0f), 0x8000);
    assert_int_equal(fp32_to_bf16(INFINITY), 0x7f80);
    assert_int_equal(fp32_to_bf16(-INFINITY), 0xff80);
    uint16_t nan = fp32_to_bf16(bits_to_float(0x7f800001));  /* payload only in dropped bits */
    assert_true(isnan(bf16_to_fp32(nan)));
    assert_int_equal(fp32_to_bf16(bits_to_float(0x3f808000)), 0x3f80);  /* tie: to even */
    assert_int_equal(fp32_to_bf16(bits_to_float(0x3f818000)), 0x3f82);  /* tie: to even */
    assert_int_equal(fp32_to_bf16(bits_to_float(0x3f808001)), 0x3f81);
    assert_int_equal(fp32_to_bf16(bits_to_float(0x3f807fff)), 0x3f80);
    assert_int_equal(fp32_to_bf16(bits_to_float(0x7f7fffff)), 0x7f80);  /* FLT_MAX rounds to inf */
    assert_int_equal(fp32_to_bf16(bits_to_float(0x00008000)), 0x0000);  /* subnormal tie */
    assert_int_equal(fp32_to_bf16(bits_to_float(0x00018000)), 0x0002);
    assert_float_equal(bf16_to_fp32(0x4049), 3.140625f, 0);
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

/* More hand-worked blocks: the parts of the K formats the first set leaves out (the
 * packed scales and mins of sub-blocks 4..7, Q6_K's odd rows and second half), the
 * plain float types, and rows of several blocks (the stride between them). */
static void test_known_blocks_more(void **state)
{
    (void)state;
    float out[512];

    /* Q4_K, two super-blocks; the second has d = 1, dmin = 0.5.
     * Sub-block 6: scale = (sc[10] & 15) | (sc[2] >> 6) << 4 = 5 | 1 << 4 = 21,
     *              min   = (sc[10] >> 4) | (sc[6] >> 6) << 4 = 9 | 3 << 4 = 57.
     * Sub-block 7: scale = (sc[11] & 15) | (sc[3] >> 6) << 4 = 2, min = (sc[11] >> 4) = 1.
     * Element 195 is sub-block 6 (chunk 3, low nibble of qs[96 + 3] = 11):
     *   1 * 21 * 11 - 0.5 * 57 = 202.5.
     * Element 227 is sub-block 7 (chunk 3, high nibble of qs[99] = 4): 1 * 2 * 4 - 0.5 * 1 = 7.5.
     * Sub-block 2 keeps scale sc[2] & 63 = 0 and min sc[6] & 63 = 0, so element 64 is 0. */
    uint8_t q4_k[2][144] = {{0}};
    uint8_t *b = q4_k[1];
    b[1] = 0x3c; b[3] = 0x38;
    uint8_t *sc = b + 4, *qs = b + 16;
    sc[10] = 0x95; sc[2] = 1 << 6; sc[6] = 3 << 6; sc[11] = 0x12;
    qs[99] = 0x4b; qs[32] = 0x0f;
    dequantize_row(TENSOR_Q4_K, q4_k, out, 512);
    for (int i = 0; i < 256; i++)
        assert_float_equal(out[i], 0.0f, 0);  /* the first block is all zeros */
    assert_float_equal(out[256 + 195], 202.5f, 0);
    assert_float_equal(out[256 + 227], 7.5f, 0);
    assert_float_equal(out[256 + 64], 0.0f, 0);
    assert_float_equal(out[256 + 192], -28.5f, 0);   /* q = 0 in sub-block 6: just -dmin * min */

    /* Q6_K with d = 0.5:
     * element 37 (half 0, row 1, col 5): low 4 bits from ql[32 + 5] = 12, high 2 from qh[5]
     *   bits 2-3 = 1 -> q = 28; scale[37 / 16 = 2] = 5: 0.5 * 5 * (28 - 32) = -10.
     * element 231 (half 1, row 3, col 7): ql[64 + 32 + 7] high nibble = 7, qh[32 + 7] bits
     *   6-7 = 3 -> q = 55; scale[14] = -2: 0.5 * -2 * 23 = -23.
     * element 16 (row 0, col 16, all bits 0 -> q = 0): scale[1] = 7: 0.5 * 7 * -32 = -112. */
    uint8_t q6_k[210] = {0};
    uint8_t *ql = q6_k, *qh = q6_k + 128;
    int8_t *s6 = (int8_t *)(q6_k + 192);
    q6_k[209] = 0x38;
    ql[37] = 0x0c; qh[5] = 1 << 2; s6[2] = 5;
    ql[103] = 0x70; qh[39] = 3 << 6; s6[14] = -2;
    s6[1] = 7;
    dequantize_row(TENSOR_Q6_K, q6_k, out, 256);
    assert_float_equal(out[37], -10.0f, 0);
    assert_float_equal(out[231], -23.0f, 0);
    assert_float_equal(out[16], -112.0f, 0);
    assert_float_equal(out[0], 0.0f, 0);              /* scale[0] = 0 */

    /* Q8_0 second block with d = -0.25 (0xb400): q = 100 -> -25. */
    uint8_t q8_0[2][34] = {{0}};
    q8_0[1][1] = 0xb4;
    q8_0[1][2 + 31] = 100;
    dequantize_row(TENSOR_Q8_0, q8_0, out, 64);
    assert_float_equal(out[63], -25.0f, 0);
    assert_float_equal(out[32], 0.0f, 0);

    /* F16, BF16, F32 store values one by one. */
    uint16_t h[3] = {0x3c00, 0xc200, 0x3555}, bf[2] = {0x3f80, 0xc0a0};
    dequantize_row(TENSOR_F16, h, out, 3);
    assert_float_equal(out[1], -3.0f, 0);
    dequantize_row(TENSOR_BF16, bf, out, 2);
    assert_float_equal(out[1], -5.0f, 0);
    float f[2] = {1.5f, -7.25f};
    dequantize_row(TENSOR_F32, f, out, 2);
    assert_memory_equal(out, f, sizeof f);
}

/* The error a format may make on one element, from the block holding it: half a step of
 * the block's grid (plus the rounding of the scales to 16 or 6 bits), or a whole step
 * where the format gives up one end of the range (Q4_0's +7/-8). The last term is the
 * f16 scale's absolute precision (2^-25 once subnormal) times the largest quant. */
static float error_bound(enum tensor_type t, const float *blk, int n_blk, float x)
{
    float lo = 0.0f, hi = 0.0f, amax = 0.0f;
    for (int i = 0; i < n_blk; i++) {
        lo = fminf(lo, blk[i]);
        hi = fmaxf(hi, blk[i]);
        amax = fmaxf(amax, fabsf(blk[i]));
    }
    switch (t) {
    case TENSOR_F32: return 0.0f;
    case TENSOR_F16: return fabsf(x) * 0x1p-11f + 0x1p-25f;
    case TENSOR_BF16: return fabsf(x) * 0x1p-8f;
    case TENSOR_Q8_0: return amax * (0.5f / 127 + 0x1p-10f) + 128 * 0x1p-25f;
    case TENSOR_Q4_0: return amax * (1.0f / 8 + 0x1p-9f) + 8 * 0x1p-25f;
    case TENSOR_Q4_1: return (hi - lo) * (0.5f / 15 + 0x1p-9f) + amax * 0x1p-10f + 16 * 0x1p-25f;
    case TENSOR_Q4_K: return amax * (1.0f / 15 + 0x1p-8f) + 63 * 16 * 0x1p-25f;  /* range <= 2 amax */
    case TENSOR_Q6_K: return amax * (0.5f / 31 + 0x1p-8f) + 127 * 32 * 0x1p-25f;
    default: return 0.0f;
    }
}

static int block_of(enum tensor_type t)
{
    return t == TENSOR_Q4_K || t == TENSOR_Q6_K ? QK_K : type_uses_q8a(t) ? QK : 1;
}

/* Inputs the quantizers must cope with: symmetric, heavy-tailed with outliers, all of
 * one sign (Q4_1 and Q4_K offsets), blocks of zeros, and scales far from 1. */
static void fill_case(float *x, int n, int kind)
{
    for (int i = 0; i < n; i++) {
        float v = frand();
        switch (kind) {
        case 0: x[i] = v; break;
        case 1: x[i] = v * v * v * ((i % 97) == 0 ? 30.0f : 1.0f); break;
        case 2: x[i] = 3.0f + fabsf(v); break;
        case 3: x[i] = -0.5f - 0.01f * fabsf(v); break;
        case 4: x[i] = (i / 64) % 2 ? 0.0f : v * 1e-3f; break;
        default: x[i] = v * 200.0f * (float)(1 + (i / 32) % 4); break;
        }
    }
}

static void test_round_trip(void **state)
{
    (void)state;
    enum { N = 1024 };
    float x[N], y[N];
    uint8_t buf[N * 4];
    for (size_t i = 0; i < N_TYPES; i++) {
        enum tensor_type t = all_types[i];
        int nb = block_of(t);
        for (int kind = 0; kind < 6; kind++) {
            fill_case(x, N, kind);
            assert_int_equal(quantize_row(t, x, buf, N), 0);
            dequantize_row(t, buf, y, N);
            for (int j = 0; j < N; j++) {
                const float *blk = x + j / nb * nb;
                if (fabsf(x[j] - y[j]) > error_bound(t, blk, nb, x[j]))
                    fail_msg("%s case %d: elem %d: %g -> %g", tensor_type_info(t)->name, kind, j,
                             x[j], y[j]);
            }
        }
    }
}

static void test_zero_and_unsupported(void **state)
{
    (void)state;
    float x[256] = {0}, y[256];
    uint8_t buf[1024];
    for (size_t i = 0; i < N_TYPES; i++) {
        memset(y, 0x7f, sizeof y);
        assert_int_equal(quantize_row(all_types[i], x, buf, 256), 0);
        dequantize_row(all_types[i], buf, y, 256);
        for (int j = 0; j < 256; j++)
            assert_float_equal(y[j], 0.0f, 0);
    }
    assert_int_equal(quantize_row(TENSOR_Q5_0, x, buf, 256), -1);
    assert_int_equal(quantize_row(TENSOR_Q2_K, x, buf, 256), -1);
    assert_int_equal(quantize_row(TENSOR_Q8_K, x, buf, 256), -1);
    for (size_t i = 0; i < N_TYPES; i++) {
        enum tensor_type t = all_types[i];
        int want = t != TENSOR_F32 && t != TENSOR_F16 && t != TENSOR_BF16;
        assert_int_equal(!!type_uses_q8a(t), want);
    }
}

/* q8a by hand: max |x| = 12.7 gives d = 0.1, so q = x / 0.1 rounded, s = d * sum(q). */
static void test_q8a_known(void **state)
{
    (void)state;
    float x[QK] = {0};
    x[0] = 12.7f; x[1] = -6.32f; x[2] = 0.04f; x[3] = 0.06f; x[4] = -12.7f;
    block_q8a q;
    for (int level = SIMD_SCALAR; level <= (int)simd_best_level(); level++) {
        simd_set_level((enum simd_level)level);
        quantize_row_q8a(x, &q, QK);
        assert_float_equal(q.d, 0.1f, 1e-7);
        assert_int_equal(q.q[0], 127);
        assert_int_equal(q.q[1], -63);
        assert_int_equal(q.q[2], 0);
        assert_int_equal(q.q[3], 1);
        assert_int_equal(q.q[4], -127);
        assert_float_equal(q.s, q.d * (127 - 63 + 1 - 127), 1e-6);
    }
    simd_set_level(simd_best_level());
}

/* vec_dot at the scalar level equals a float dot of the dequantized operands (the
 * weights through dequantize_row, the activations through q8a where the type uses it),
 * up to float summation: the tolerance scales with sum |w * x|, not with the result,
 * which may cancel to near zero. */
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
        for (int kind = 0; kind < 6; kind++) {
            fill_case(w, N, kind);
            fill_case(x, N, (kind + 1) % 6);
            quantize_row(t, w, buf, N);
            dequantize_row(t, buf, wd, N);
            quantize_row_q8a(x, xq, N);
            for (int b = 0; b < N / QK; b++) {
                int sum = 0;
                for (int j = 0; j < QK; j++) {
                    xd[b * QK + j] = type_uses_q8a(t) ? xq[b].d * xq[b].q[j] : x[b * QK + j];
                    sum += xq[b].q[j];
                }
                assert_float_equal(xq[b].s, xq[b].d * sum, 1e-5 * fabs(xq[b].d * sum) + 1e-30);
            }
            double ref = 0.0, mag = 0.0;
            for (int j = 0; j < N; j++) {
                ref += (double)wd[j] * xd[j];
                mag += fabs((double)wd[j] * xd[j]);
            }
            float got = vec_dot(t, buf, x, xq, N);
            if (fabs(got - ref) > 2e-5 * mag + 1e-30)
                fail_msg("%s case %d: vec_dot %.9g, reference %.9g (magnitude %g)",
                         tensor_type_info(t)->name, kind, got, ref, mag);
        }
    }
    simd_set_level(simd_best_level());
}

/* Every SIMD level gives the scalar level's answer (up to summation order), for rows of
 * one block, of a few blocks (kernel tails), and long rows; F32/F16/BF16 rows also at
 * lengths that are not a multiple of any vector width. */
static void check_levels_at(enum tensor_type t, int n, int kind)
{
    enum { NMAX = 4096 };
    static float w[NMAX], x[NMAX], wd[NMAX];
    static uint8_t buf[NMAX * 4];
    static block_q8a xq_scalar[NMAX / QK], xq[NMAX / QK];
    fill_case(w, n, kind);
    fill_case(x, n, (kind + 2) % 6);
    quantize_row(t, w, buf, n);
    simd_set_level(SIMD_SCALAR);
    int nq = type_uses_q8a(t) ? n / QK : 0;
    if (nq)
        quantize_row_q8a(x, xq_scalar, n);
    float want = vec_dot(t, buf, x, xq_scalar, n);
    double mag = 0.0;
    dequantize_row(t, buf, wd, n);
    for (int j = 0; j < n; j++)
        mag += fabs((double)wd[j] * x[j]);
    for (int level = SIMD_AVX2; level <= (int)simd_best_level(); level++) {
        simd_set_level((enum simd_level)level);
        if (nq) {
            quantize_row_q8a(x, xq, n);
            assert_memory_equal(xq, xq_scalar, (size_t)nq * sizeof xq[0]);
        }
        float got = vec_dot(t, buf, x, xq, n);
        if (fabsf(got - want) > 1e-4f * fabsf(want) + 1e-5 * mag)
            fail_msg("%s n=%d case %d at %s: %.9g, scalar %.9g", tensor_type_info(t)->name, n, kind,
                     simd_level_name((enum simd_level)level), got, want);
    }
    simd_set_level(simd_best_level());
}

static void test_simd_levels_match_scalar(void **state)
{
    (void)state;
    static const int q_sizes[] = {32, 96, 256, 768, 4096};
    static const int f_sizes[] = {1, 7, 8, 15, 16, 17, 33, 63, 100, 256, 1000, 4096};
    for (size_t i = 0; i < N_TYPES; i++) {
        enum tensor_type t = all_types[i];
        int nb = block_of(t);
        const int *sizes = nb == 1 ? f_sizes : q_sizes;
        size_t n_sizes = nb == 1 ? sizeof f_sizes / sizeof f_sizes[0] : sizeof q_sizes / sizeof q_sizes[0];
        for (size_t k = 0; k < n_sizes; k++)
            if (sizes[k] % nb == 0)
                for (int kind = 0; kind < 6; kind++)
                    check_levels_at(t, sizes[k], kind);
    }
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

/* The f16 attention helpers give bit for bit what the f32 code gives on the widened
 * values, at every SIMD level (the f16 KV cache keeps the f32 cache's numerics). */
static void test_f16_attention_helpers_match_f32(void **state)
{
    (void)state;
    enum { N = 64 + 8 + 3 };
    uint16_t h[N];
    float wide[N], x[N];
    srand(7);
    for (int i = 0; i < N; i++) {
        h[i] = fp32_to_fp16((float)rand() / RAND_MAX * 4.0f - 2.0f);
        wide[i] = fp16_to_fp32(h[i]);
        x[i] = (float)rand() / RAND_MAX - 0.5f;
    }
    for (int level = SIMD_SCALAR; level <= (int)simd_best_level(); level++) {
        simd_set_level((enum simd_level)level);
        for (int n = 1; n <= N; n += 7) {
            float a = vec_dot_f16(h, x, n), b = vec_dot(TENSOR_F32, wide, x, NULL, n);
            assert_memory_equal(&a, &b, sizeof a);
            float y1[N], y2[N];
            for (int i = 0; i < n; i++) y1[i] = y2[i] = x[i];
            axpy_f16(y1, 0.3125f, h, n);
            for (int i = 0; i < n; i++) y2[i] += 0.3125f * wide[i];
            assert_memory_equal(y1, y2, sizeof(float) * (size_t)n);
        }
    }
    simd_set_level(simd_best_level());
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_simd_env_and_levels),  /* first: before anything reads the level */
        cmocka_unit_test(test_fp16),
        cmocka_unit_test(test_fp16_special_values),
        cmocka_unit_test(test_fp16_is_nearest),
        cmocka_unit_test(test_bf16),
        cmocka_unit_test(test_known_blocks),
        cmocka_unit_test(test_known_blocks_more),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_zero_and_unsupported),
        cmocka_unit_test(test_q8a_known),
        cmocka_unit_test(test_vec_dot_reference),
        cmocka_unit_test(test_simd_levels_match_scalar),
        cmocka_unit_test(test_q8a_zero_block),
        cmocka_unit_test(test_f16_attention_helpers_match_f32),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
