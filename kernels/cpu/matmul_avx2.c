/* matmul_avx2.c - float-weight tiles for matmul.c (see matmul_simd.h): up to 2 weight
 * rows by 4 tokens in registers, so each weight vector loaded (and widened from f16 or
 * bf16) serves 4 tokens and each activation vector 2 rows. 8 accumulators, 2 weight
 * vectors and a token vector fit AVX2's 16 registers; the caller's 4 x 4 tile is walked
 * as row pairs, the second pair finding the tokens in L1. */
#include <immintrin.h>
#include <stdint.h>

#include "cpu/matmul_simd.h"

static inline float hsum(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* 8 weights from element i of a row, as f32. */
static inline __m256 load_f32(const void *row, int i) { return _mm256_loadu_ps((const float *)row + i); }
static inline __m256 load_f16(const void *row, int i)
{
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)row + i)));
}
static inline __m256 load_bf16(const void *row, int i)
{
    __m256i h = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)((const uint16_t *)row + i)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(h, 16));
}

#define DEFINE_FLOAT_TILE(fmt, RM, RN)                                                          \
    static void tile_##fmt##_##RM##x##RN(const void *w, size_t ws, const float *x, size_t xs,   \
                                         int C, float *y, size_t ys)                            \
    {                                                                                           \
        __m256 acc[RM][RN];                                                                     \
        for (int r = 0; r < RM; r++)                                                            \
            for (int t = 0; t < RN; t++) acc[r][t] = _mm256_setzero_ps();                       \
        for (int i = 0; i < C; i += 8) {                                                        \
            __m256 wv[RM];                                                                      \
            for (int r = 0; r < RM; r++) wv[r] = load_##fmt((const char *)w + r * ws, i);       \
            for (int t = 0; t < RN; t++) {                                                      \
                __m256 xv = _mm256_loadu_ps(x + t * xs + i);                                    \
                for (int r = 0; r < RM; r++) acc[r][t] = _mm256_fmadd_ps(wv[r], xv, acc[r][t]); \
            }                                                                                   \
        }                                                                                       \
        for (int r = 0; r < RM; r++)                                                            \
            for (int t = 0; t < RN; t++) y[t * ys + r] = hsum(acc[r][t]);                       \
    }

#define DEFINE_FORMAT(fmt)                                                                      \
    DEFINE_FLOAT_TILE(fmt, 1, 1) DEFINE_FLOAT_TILE(fmt, 1, 2) DEFINE_FLOAT_TILE(fmt, 1, 3)      \
    DEFINE_FLOAT_TILE(fmt, 1, 4) DEFINE_FLOAT_TILE(fmt, 2, 1) DEFINE_FLOAT_TILE(fmt, 2, 2)      \
    DEFINE_FLOAT_TILE(fmt, 2, 3) DEFINE_FLOAT_TILE(fmt, 2, 4)                                   \
    static const tile_fn tiles_##fmt[2][4] = {                                                  \
        {tile_##fmt##_1x1, tile_##fmt##_1x2, tile_##fmt##_1x3, tile_##fmt##_1x4},               \
        {tile_##fmt##_2x1, tile_##fmt##_2x2, tile_##fmt##_2x3, tile_##fmt##_2x4}};

typedef void (*tile_fn)(const void *, size_t, const float *, size_t, int, float *, size_t);

DEFINE_FORMAT(f32)
DEFINE_FORMAT(f16)
DEFINE_FORMAT(bf16)

void float_tile_avx2(enum tensor_type type, const void *w, size_t w_stride, const float *x,
                     size_t x_stride, int C, float *y, size_t y_stride, int rm, int rn)
{
    const tile_fn(*tiles)[4] = type == TENSOR_F32 ? tiles_f32 : type == TENSOR_F16 ? tiles_f16 : tiles_bf16;
    for (int r = 0; r < rm; r += 2) {
        int n = rm - r < 2 ? rm - r : 2;
        tiles[n - 1][rn - 1]((const char *)w + r * w_stride, w_stride, x, x_stride, C, y + r, y_stride);
    }
}
