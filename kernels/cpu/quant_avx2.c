/* quant_avx2.c - the AVX2 (+FMA, F16C) kernels behind vec_dot and matmul (see
 * quant_simd.h). The tile bodies live in tile_kernels.h, shared with the AVX-512 file;
 * this file supplies the 8-bit dot product: maddubs then madd. */
#include <immintrin.h>
#include <stdbool.h>
#include <string.h>

#include "cpu/quant_simd.h"

/* 8 lanes of 4-byte dot products: maddubs makes 16-bit pair sums (|w| <= 127, so they
 * cannot saturate), madd with ones widens and adds pairs to 32 bits. */
static inline __m256i dot_u8_s8(__m256i u, __m256i s)
{
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}

#define DOT_U8_S8(u, s) dot_u8_s8(u, s)
#define KERNEL_SUFFIX avx2
#include "cpu/tile_kernels.h"

vec_dot_fn vec_dot_kernel_avx2(enum tensor_type type)
{
    switch (type) {
    case TENSOR_F32: return dot_f32_avx2;
    case TENSOR_F16: return dot_f16_avx2;
    case TENSOR_BF16: return dot_bf16_avx2;
    case TENSOR_Q8_0: return dot_q8_0_avx2;
    case TENSOR_Q4_0: return dot_q4_0_avx2;
    case TENSOR_Q4_1: return dot_q4_1_avx2;
    case TENSOR_Q4_K: return dot_q4_k_avx2;
    case TENSOR_Q6_K: return dot_q6_k_avx2;
    default: return NULL;
    }
}

gemm_tile_fn gemm_tile_kernel_avx2(enum tensor_type type)
{
    switch (type) {
    case TENSOR_Q8_0: return tile_q8_0_avx2;
    case TENSOR_Q4_0: return tile_q4_0_avx2;
    case TENSOR_Q4_1: return tile_q4_1_avx2;
    case TENSOR_Q4_K: return tile_q4_k_avx2;
    case TENSOR_Q6_K: return tile_q6_k_avx2;
    default: return NULL;
    }
}

void quantize_row_q8a_avx2(const float *src, block_q8a *dst, int64_t n)
{
    quantize_q8a_avx2(src, dst, n);
}

/* ---- packed 8-row kernels (layout in quant_simd.h) ---------------------------------- */

/* Tokens per tile: 4 accumulators of 8 rows plus their 16-bit partial sums and the
 * group's unpacked weights fit the 16 vector registers. */
enum { PACKED_TOKENS = 4 };

static inline __m256i bcast4(const int8_t *q)
{
    int32_t v;
    memcpy(&v, q, 4);
    return _mm256_set1_epi32(v);
}

/* acc + d * dx * isum (+ c * s): the 8 rows' block products, scaled. */
static inline __m256 packed_scale(__m256 acc, __m256i isum, __m256 d, const block_q8a *xb)
{
    return _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_mul_ps(d, _mm256_set1_ps(xb->d)), acc);
}

static inline __m256 half8(const uint16_t *h)
{
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)h));
}

/* An empty asm that claims to change the accumulators: GCC otherwise reassociates the
 * chain of adds into a tree, computes every product of the block first and spills them
 * to the stack (a third of the speed lost in stores and reloads). */
#define KEEP_CHAINS(v, RN)                                                                      \
    for (int t_ = 0; t_ < RN; t_++) __asm__("" : "+x"(v[t_]))

/* Q8_0: |w| times sign(x, w) per 4-byte group; the 16-bit pair sums are widened at
 * once (two of them could overflow 16 bits). */
#define DEFINE_PACKED_Q8(RN)                                                                     \
    static void packed_q8_##RN(const packed_q8x8 *grp, int nb, const block_q8a *x, size_t xs,    \
                               float *y, size_t ys)                                             \
    {                                                                                           \
        const __m256i ones = _mm256_set1_epi16(1);                                              \
        __m256 acc[RN];                                                                         \
        for (int t = 0; t < RN; t++) acc[t] = _mm256_setzero_ps();                              \
        for (int b = 0; b < nb; b++) {                                                          \
            __m256i isum[RN];                                                                   \
            for (int t = 0; t < RN; t++) isum[t] = _mm256_setzero_si256();                      \
            for (int k = 0; k < 8; k++) {                                                       \
                __m256i w = _mm256_loadu_si256((const __m256i *)(grp[b].q + 32 * k));           \
                __m256i aw = _mm256_abs_epi8(w);                                                \
                for (int t = 0; t < RN; t++) {                                                  \
                    __m256i xv = _mm256_sign_epi8(bcast4(x[t * xs + b].q + 4 * k), w);          \
                    isum[t] = _mm256_add_epi32(isum[t],                                         \
                                               _mm256_madd_epi16(_mm256_maddubs_epi16(aw, xv), ones)); \
                }                                                                               \
                KEEP_CHAINS(isum, RN);                                                          \
            }                                                                                   \
            __m256 d = half8(grp[b].d);                                                         \
            for (int t = 0; t < RN; t++) acc[t] = packed_scale(acc[t], isum[t], d, &x[t * xs + b]); \
        }                                                                                       \
        for (int t = 0; t < RN; t++) _mm256_storeu_ps(y + t * ys, acc[t]);                      \
    }

/* Q4_x: nibbles are at most 15, so a block's eight 16-bit pair sums (8 * 2 * 15 * 127)
 * add up without overflow and are widened once per block. */
#define DEFINE_PACKED_Q4(RN)                                                                     \
    static void packed_q4_##RN(const packed_q4x8 *grp, int nb, const block_q8a *x, size_t xs,    \
                               float *y, size_t ys)                                             \
    {                                                                                           \
        const __m256i low = _mm256_set1_epi8(0x0f), ones = _mm256_set1_epi16(1);                \
        __m256 acc[RN];                                                                         \
        for (int t = 0; t < RN; t++) acc[t] = _mm256_setzero_ps();                              \
        for (int b = 0; b < nb; b++) {                                                          \
            __m256i s16[RN];                                                                    \
            for (int t = 0; t < RN; t++) s16[t] = _mm256_setzero_si256();                       \
            for (int k = 0; k < 4; k++) {                                                       \
                __m256i raw = _mm256_loadu_si256((const __m256i *)(grp[b].q + 32 * k));         \
                __m256i lo = _mm256_and_si256(raw, low);                                        \
                __m256i hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), low);                  \
                for (int t = 0; t < RN; t++)                                                    \
                    s16[t] = _mm256_add_epi16(s16[t], _mm256_maddubs_epi16(lo, bcast4(x[t * xs + b].q + 4 * k))); \
                KEEP_CHAINS(s16, RN);                                                           \
                for (int t = 0; t < RN; t++)                                                    \
                    s16[t] = _mm256_add_epi16(s16[t], _mm256_maddubs_epi16(hi, bcast4(x[t * xs + b].q + 16 + 4 * k))); \
                KEEP_CHAINS(s16, RN);                                                           \
            }                                                                                   \
            __m256 d = half8(grp[b].d), c = half8(grp[b].c);                                    \
            for (int t = 0; t < RN; t++) {                                                      \
                acc[t] = packed_scale(acc[t], _mm256_madd_epi16(s16[t], ones), d, &x[t * xs + b]); \
                acc[t] = _mm256_fmadd_ps(c, _mm256_set1_ps(x[t * xs + b].s), acc[t]);           \
            }                                                                                   \
        }                                                                                       \
        for (int t = 0; t < RN; t++) _mm256_storeu_ps(y + t * ys, acc[t]);                      \
    }

DEFINE_PACKED_Q8(1) DEFINE_PACKED_Q8(2) DEFINE_PACKED_Q8(3) DEFINE_PACKED_Q8(4)
DEFINE_PACKED_Q4(1) DEFINE_PACKED_Q4(2) DEFINE_PACKED_Q4(3) DEFINE_PACKED_Q4(4)

typedef void (*packed_q8_fn)(const packed_q8x8 *, int, const block_q8a *, size_t, float *, size_t);
typedef void (*packed_q4_fn)(const packed_q4x8 *, int, const block_q8a *, size_t, float *, size_t);
static const packed_q8_fn packed_q8_tiles[4] = {packed_q8_1, packed_q8_2, packed_q8_3, packed_q8_4};
static const packed_q4_fn packed_q4_tiles[4] = {packed_q4_1, packed_q4_2, packed_q4_3, packed_q4_4};

void packed_gemm_avx2(enum tensor_type type, const void *packed, int g0, int g1, int nb,
                      const block_q8a *x, int T, float *y, size_t y_stride)
{
    bool q8 = type == TENSOR_Q8_0;
    size_t group_bytes = (size_t)nb * (q8 ? sizeof(packed_q8x8) : sizeof(packed_q4x8));
    for (int g = g0; g < g1; g++) {
        const void *grp = (const char *)packed + (size_t)g * group_bytes;
        for (int t = 0; t < T; t += PACKED_TOKENS) {
            int rn = T - t < PACKED_TOKENS ? T - t : PACKED_TOKENS;
            float *yt = y + (size_t)t * y_stride + (size_t)g * PACK_ROWS;
            const block_q8a *xt = x + (size_t)t * nb;
            if (q8)
                packed_q8_tiles[rn - 1](grp, nb, xt, (size_t)nb, yt, y_stride);
            else
                packed_q4_tiles[rn - 1](grp, nb, xt, (size_t)nb, yt, y_stride);
        }
    }
}

void fp16_to_fp32_row_avx2(const uint16_t *src, float *dst, int64_t n)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
    for (; i < n; i++)
        dst[i] = _cvtsh_ss(src[i]);
}

void fp32_to_fp16_row_avx2(const float *src, uint16_t *dst, int64_t n)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(dst + i), _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++)
        dst[i] = _cvtss_sh(src[i], _MM_FROUND_TO_NEAREST_INT);
}

/* Two accumulators over 16 values, as dot_f32 (tile_kernels.h) sums. */
float vec_dot_f16_avx2(const uint16_t *k, const float *x, int64_t n)
{
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        acc0 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(k + i))), _mm256_loadu_ps(x + i), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(k + i + 8))), _mm256_loadu_ps(x + i + 8),
                               acc1);
    }
    float sum = tk_hsum(_mm256_add_ps(acc0, acc1));
    for (; i < n; i++)
        sum += _cvtsh_ss(k[i]) * x[i];
    return sum;
}

/* A product, then a sum (no fused multiply-add), as the plain f32 loop computes. */
void axpy_f16_avx2(float *y, float a, const uint16_t *v, int64_t n)
{
    __m256 va = _mm256_set1_ps(a);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 p = _mm256_mul_ps(va, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(v + i))));
        _mm256_storeu_ps(y + i, _mm256_add_ps(_mm256_loadu_ps(y + i), p));
    }
    for (; i < n; i++)
        y[i] += a * _cvtsh_ss(v[i]);
}
