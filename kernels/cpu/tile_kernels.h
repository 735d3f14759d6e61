/* tile_kernels.h - the body of the quantized matrix-product tiles, shared by
 * quant_avx2.c and quant_avx512.c, which include it after defining
 *
 *   DOT_U8_S8(u, s)   8 int32 lanes of sum(u[i] * s[i]) over 4-byte groups, u unsigned
 *                     and s signed 8-bit (AVX2: maddubs + madd; AVX-512: VNNI dpbusd)
 *   KERNEL_SUFFIX     avx2 or avx512, to name the functions
 *
 * Internal to kernels/cpu. Each tile keeps rm x rn accumulators (up to 4 x 4 vectors of
 * 8 floats) in registers: per block of 32 it loads each weight row once and each token
 * once, so prefill reuses every weight byte rn times while it is in L1.
 *
 * Formats (see quant.h): Q8_0 and Q4_0 are signed (Q4_0 as nibble - 8), so the product
 * uses |w| and sign(x, w) to fit the unsigned-by-signed instruction; Q4_1 is unsigned
 * (nibble) plus an offset m that meets the activation block sum s.
 */
#ifndef CITADEL_TILE_KERNELS_H
#define CITADEL_TILE_KERNELS_H

#include <immintrin.h>
#include <string.h>

#include "cpu/quant_simd.h"

#define TK_CAT2(a, b) a##_##b
#define TK_CAT(a, b) TK_CAT2(a, b)
#define TK_NAME(name) TK_CAT(name, KERNEL_SUFFIX)

static inline float tk_hsum(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline float tk_half(uint16_t h) { return _cvtsh_ss(h); }

/* 32 nibbles of a 16-byte block as 32 bytes 0..15 in element order. */
static inline __m256i tk_nibbles(const uint8_t *qs)
{
    __m128i q = _mm_loadu_si128((const __m128i *)qs), m = _mm_set1_epi8(0x0f);
    return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(q, 4), m), _mm_and_si128(q, m));
}

static inline __m256i tk_load_q8_0(const void *row, int b)
{
    return _mm256_loadu_si256((const __m256i *)((const block_q8_0 *)row)[b].qs);
}
static inline float tk_scale_q8_0(const void *row, int b) { return tk_half(((const block_q8_0 *)row)[b].d); }

static inline __m256i tk_load_q4_0(const void *row, int b)
{
    return _mm256_sub_epi8(tk_nibbles(((const block_q4_0 *)row)[b].qs), _mm256_set1_epi8(8));
}
static inline float tk_scale_q4_0(const void *row, int b) { return tk_half(((const block_q4_0 *)row)[b].d); }

/* Signed weights: acc[r][t] += (d_w * d_x) * sum(w * x). */
#define TK_DEFINE_SIGNED(fmt, RM, RN)                                                           \
    static void TK_NAME(tile_##fmt##_##RM##x##RN)(const void *w, size_t ws, const block_q8a *x,  \
                                                   size_t xs, int nb, float *y, size_t ys)       \
    {                                                                                           \
        __m256 acc[RM][RN];                                                                     \
        for (int r = 0; r < RM; r++)                                                            \
            for (int t = 0; t < RN; t++) acc[r][t] = _mm256_setzero_ps();                       \
        for (int b = 0; b < nb; b++) {                                                          \
            __m256i wv[RM], aw[RM], xv[RN];                                                     \
            __m256 dw[RM], dx[RN];                                                              \
            for (int r = 0; r < RM; r++) {                                                      \
                const void *row = (const char *)w + r * ws;                                     \
                wv[r] = tk_load_##fmt(row, b);                                                  \
                aw[r] = _mm256_abs_epi8(wv[r]);                                                 \
                dw[r] = _mm256_set1_ps(tk_scale_##fmt(row, b));                                 \
            }                                                                                   \
            for (int t = 0; t < RN; t++) {                                                      \
                xv[t] = _mm256_loadu_si256((const __m256i *)x[t * xs + b].q);                   \
                dx[t] = _mm256_set1_ps(x[t * xs + b].d);                                        \
            }                                                                                   \
            for (int r = 0; r < RM; r++)                                                        \
                for (int t = 0; t < RN; t++) {                                                  \
                    __m256i p = DOT_U8_S8(aw[r], _mm256_sign_epi8(xv[t], wv[r]));               \
                    acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p),                          \
                                                _mm256_mul_ps(dw[r], dx[t]), acc[r][t]);        \
                }                                                                               \
        }                                                                                       \
        for (int r = 0; r < RM; r++)                                                            \
            for (int t = 0; t < RN; t++) y[t * ys + r] = tk_hsum(acc[r][t]);                    \
    }

/* Q4_1: acc[r][t] += d_w * d_x * sum(q * x), plus m_w * s_x collected in `offset`. */
#define TK_DEFINE_Q4_1(RM, RN)                                                                  \
    static void TK_NAME(tile_q4_1_##RM##x##RN)(const void *w, size_t ws, const block_q8a *x,     \
                                                size_t xs, int nb, float *y, size_t ys)          \
    {                                                                                           \
        __m256 acc[RM][RN];                                                                     \
        float offset[RM][RN] = {{0}};                                                           \
        for (int r = 0; r < RM; r++)                                                            \
            for (int t = 0; t < RN; t++) acc[r][t] = _mm256_setzero_ps();                       \
        for (int b = 0; b < nb; b++) {                                                          \
            __m256i qv[RM], xv[RN];                                                             \
            __m256 dw[RM], dx[RN];                                                              \
            float mw[RM];                                                                       \
            for (int r = 0; r < RM; r++) {                                                      \
                const block_q4_1 *blk = (const block_q4_1 *)((const char *)w + r * ws) + b;     \
                qv[r] = tk_nibbles(blk->qs);                                                    \
                dw[r] = _mm256_set1_ps(tk_half(blk->d));                                        \
                mw[r] = tk_half(blk->m);                                                        \
            }                                                                                   \
            for (int t = 0; t < RN; t++) {                                                      \
                xv[t] = _mm256_loadu_si256((const __m256i *)x[t * xs + b].q);                   \
                dx[t] = _mm256_set1_ps(x[t * xs + b].d);                                        \
            }                                                                                   \
            for (int r = 0; r < RM; r++)                                                        \
                for (int t = 0; t < RN; t++) {                                                  \
                    __m256i p = DOT_U8_S8(qv[r], xv[t]);                                        \
                    acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p),                          \
                                                _mm256_mul_ps(dw[r], dx[t]), acc[r][t]);        \
                    offset[r][t] += mw[r] * x[t * xs + b].s;                                    \
                }                                                                               \
        }                                                                                       \
        for (int r = 0; r < RM; r++)                                                            \
            for (int t = 0; t < RN; t++) y[t * ys + r] = tk_hsum(acc[r][t]) + offset[r][t];     \
    }

typedef void (*tk_fixed_fn)(const void *, size_t, const block_q8a *, size_t, int, float *, size_t);

#define TK_DEFINE_ALL(DEF, ...)                                                                 \
    DEF(__VA_ARGS__ 1, 1) DEF(__VA_ARGS__ 1, 2) DEF(__VA_ARGS__ 1, 3) DEF(__VA_ARGS__ 1, 4)     \
    DEF(__VA_ARGS__ 2, 1) DEF(__VA_ARGS__ 2, 2) DEF(__VA_ARGS__ 2, 3) DEF(__VA_ARGS__ 2, 4)     \
    DEF(__VA_ARGS__ 3, 1) DEF(__VA_ARGS__ 3, 2) DEF(__VA_ARGS__ 3, 3) DEF(__VA_ARGS__ 3, 4)     \
    DEF(__VA_ARGS__ 4, 1) DEF(__VA_ARGS__ 4, 2) DEF(__VA_ARGS__ 4, 3) DEF(__VA_ARGS__ 4, 4)

#define TK_TABLE(prefix)                                                                        \
    {{TK_NAME(prefix##1x1), TK_NAME(prefix##1x2), TK_NAME(prefix##1x3), TK_NAME(prefix##1x4)},  \
     {TK_NAME(prefix##2x1), TK_NAME(prefix##2x2), TK_NAME(prefix##2x3), TK_NAME(prefix##2x4)},  \
     {TK_NAME(prefix##3x1), TK_NAME(prefix##3x2), TK_NAME(prefix##3x3), TK_NAME(prefix##3x4)},  \
     {TK_NAME(prefix##4x1), TK_NAME(prefix##4x2), TK_NAME(prefix##4x3), TK_NAME(prefix##4x4)}}

TK_DEFINE_ALL(TK_DEFINE_SIGNED, q8_0, )
TK_DEFINE_ALL(TK_DEFINE_SIGNED, q4_0, )
TK_DEFINE_ALL(TK_DEFINE_Q4_1, )

static const tk_fixed_fn tk_q8_0[4][4] = TK_TABLE(tile_q8_0_);
static const tk_fixed_fn tk_q4_0[4][4] = TK_TABLE(tile_q4_0_);
static const tk_fixed_fn tk_q4_1[4][4] = TK_TABLE(tile_q4_1_);

static void TK_NAME(tile_q8_0)(const void *w, size_t ws, const block_q8a *x, size_t xs, int nb,
                                float *y, size_t ys, int rm, int rn)
{
    tk_q8_0[rm - 1][rn - 1](w, ws, x, xs, nb, y, ys);
}
static void TK_NAME(tile_q4_0)(const void *w, size_t ws, const block_q8a *x, size_t xs, int nb,
                                float *y, size_t ys, int rm, int rn)
{
    tk_q4_0[rm - 1][rn - 1](w, ws, x, xs, nb, y, ys);
}
static void TK_NAME(tile_q4_1)(const void *w, size_t ws, const block_q8a *x, size_t xs, int nb,
                                float *y, size_t ys, int rm, int rn)
{
    tk_q4_1[rm - 1][rn - 1](w, ws, x, xs, nb, y, ys);
}

/* vec_dot is the 1 x 1 tile. */
static float TK_NAME(dot_q8_0)(const void *w, const float *x, const block_q8a *xq, int64_t n)
{
    (void)x;
    float y;
    tk_q8_0[0][0](w, 0, xq, 0, (int)(n / QK), &y, 0);
    return y;
}
static float TK_NAME(dot_q4_0)(const void *w, const float *x, const block_q8a *xq, int64_t n)
{
    (void)x;
    float y;
    tk_q4_0[0][0](w, 0, xq, 0, (int)(n / QK), &y, 0);
    return y;
}
static float TK_NAME(dot_q4_1)(const void *w, const float *x, const block_q8a *xq, int64_t n)
{
    (void)x;
    float y;
    tk_q4_1[0][0](w, 0, xq, 0, (int)(n / QK), &y, 0);
    return y;
}

/* f32 and f16 weights against f32 activations. */
static float TK_NAME(dot_f32)(const void *w, const float *x, const block_q8a *xq, int64_t n)
{
    (void)xq;
    const float *a = w;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(x + i), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(x + i + 8), acc1);
    }
    float sum = tk_hsum(_mm256_add_ps(acc0, acc1));
    for (; i < n; i++)
        sum += a[i] * x[i];
    return sum;
}

static float TK_NAME(dot_f16)(const void *w, const float *x, const block_q8a *xq, int64_t n)
{
    (void)xq;
    const uint16_t *a = w;
    __m256 acc = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        acc = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(a + i))),
                              _mm256_loadu_ps(x + i), acc);
    float sum = tk_hsum(acc);
    for (; i < n; i++)
        sum += _cvtsh_ss(a[i]) * x[i];
    return sum;
}

/* bf16 is the top half of an f32: widen to 32 bits and shift into place. */
static float TK_NAME(dot_bf16)(const void *w, const float *x, const block_q8a *xq, int64_t n)
{
    (void)xq;
    const uint16_t *a = w;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256i h0 = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(a + i)));
        __m256i h1 = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(a + i + 8)));
        acc0 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_slli_epi32(h0, 16)), _mm256_loadu_ps(x + i), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_slli_epi32(h1, 16)), _mm256_loadu_ps(x + i + 8), acc1);
    }
    float sum = tk_hsum(_mm256_add_ps(acc0, acc1));
    for (; i < n; i++) {
        uint32_t bits = (uint32_t)a[i] << 16;
        float f;
        memcpy(&f, &bits, sizeof f);
        sum += f * x[i];
    }
    return sum;
}

static void TK_NAME(quantize_q8a)(const float *src, block_q8a *dst, int64_t n)
{
    const __m256 sign_mask = _mm256_set1_ps(-0.0f);
    for (int64_t i = 0; i < n / QK; i++, src += QK) {
        __m256 v[4], m = _mm256_setzero_ps();
        for (int j = 0; j < 4; j++) {
            v[j] = _mm256_loadu_ps(src + 8 * j);
            m = _mm256_max_ps(m, _mm256_andnot_ps(sign_mask, v[j]));
        }
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        float d = _mm_cvtss_f32(m4) / 127.0f, id = d ? 1.0f / d : 0.0f;
        __m256 scale = _mm256_set1_ps(id);
        __m256i q[4];
        for (int j = 0; j < 4; j++)  /* cvtps rounds to nearest even, as lrintf does */
            q[j] = _mm256_cvtps_epi32(_mm256_mul_ps(v[j], scale));
        __m256i sum = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
        int32_t lanes[32];
        for (int j = 0; j < 4; j++)
            _mm256_storeu_si256((__m256i *)(lanes + 8 * j), q[j]);
        for (int j = 0; j < QK; j++)
            dst[i].q[j] = (int8_t)lanes[j];
        __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(sum), _mm256_extracti128_si256(sum, 1));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4e));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xb1));
        dst[i].d = d;
        dst[i].s = d * (float)_mm_cvtsi128_si32(s4);
    }
}

/* ---- K formats: one row at a time (vec_dot) ----------------------------------------- */

static inline void tk_q4_k_scale_min(int j, const uint8_t *s, int *scale, int *min)
{
    if (j < 4) {
        *scale = s[j] & 63;
        *min = s[j + 4] & 63;
    } else {
        *scale = (s[j + 4] & 0xf) | ((s[j - 4] >> 6) << 4);
        *min = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

static inline __m256i tk_widen(__m256i p16) { return _mm256_madd_epi16(p16, _mm256_set1_epi16(1)); }

/* ---- K formats: tiles of up to 2 rows x 4 tokens ------------------------------------
 *
 * The q8a scale changes every 32 elements, so a sub-block's integer sum cannot be
 * carried into the next one: each (row, token) pair converts and scales its sum once
 * per sub-block. What the tile saves is the rest: the weights are unpacked and their
 * scales decoded once for all the tile's tokens, and each token's block is loaded once
 * for both rows. 2 x 4 float accumulators leave registers for the unpacked weights. */

enum { TK_K_ROWS = 2 };

/* Q4_K: sub-block j's scale d*sc and offset dmin*m as floats. */
static inline void tk_q4_k_scales(const block_q4_k *b, float *scale, float *min)
{
    float d = tk_half(b->d), dmin = tk_half(b->dmin);
    for (int j = 0; j < 8; j++) {
        int sc, m;
        tk_q4_k_scale_min(j, b->scales, &sc, &m);
        scale[j] = d * (float)sc;
        min[j] = dmin * (float)m;
    }
}

/* Q4_K: chunk c (64 elements) holds sub-block 2c in its low nibbles, 2c+1 in its high
 * ones; x = scale * q - min, and the min meets the activation block sum s. */
#define TK_DEFINE_Q4_K(RM, RN)                                                                  \
    static void TK_NAME(tile_q4_k_##RM##x##RN)(const void *w, size_t ws, const block_q8a *x,     \
                                                size_t xs, int nb, float *y, size_t ys)          \
    {                                                                                           \
        const __m256i low = _mm256_set1_epi8(0x0f), ones = _mm256_set1_epi16(1);                \
        __m256 acc[RM][RN];                                                                     \
        float offset[RM][RN] = {{0}};                                                           \
        for (int r = 0; r < RM; r++)                                                            \
            for (int t = 0; t < RN; t++) acc[r][t] = _mm256_setzero_ps();                       \
        for (int i = 0; i < nb / 8; i++) {                                                      \
            const block_q4_k *blk[RM];                                                          \
            float scale[RM][8], min[RM][8];                                                     \
            for (int r = 0; r < RM; r++) {                                                      \
                blk[r] = (const block_q4_k *)((const char *)w + r * ws) + i;                    \
                tk_q4_k_scales(blk[r], scale[r], min[r]);                                       \
            }                                                                                   \
            for (int j = 0; j < 8; j++) {                                                       \
                __m256i q[RM];                                                                  \
                __m256 sw[RM];                                                                  \
                for (int r = 0; r < RM; r++) {                                                  \
                    __m256i raw = _mm256_loadu_si256((const __m256i *)(blk[r]->qs + 32 * (j / 2))); \
                    q[r] = _mm256_and_si256(j & 1 ? _mm256_srli_epi16(raw, 4) : raw, low);      \
                    sw[r] = _mm256_set1_ps(scale[r][j]);                                        \
                }                                                                               \
                for (int t = 0; t < RN; t++) {                                                  \
                    const block_q8a *a = &x[t * xs + i * 8 + j];                                \
                    __m256i xv = _mm256_loadu_si256((const __m256i *)a->q);                     \
                    __m256 dx = _mm256_set1_ps(a->d);                                           \
                    for (int r = 0; r < RM; r++) {                                              \
                        __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(q[r], xv), ones);    \
                        acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_mul_ps(sw[r], dx), \
                                                    acc[r][t]);                                 \
                        offset[r][t] += min[r][j] * a->s;                                       \
                    }                                                                           \
                }                                                                               \
            }                                                                                   \
        }                                                                                       \
        for (int r = 0; r < RM; r++)                                                            \
            for (int t = 0; t < RN; t++) y[t * ys + r] = tk_hsum(acc[r][t]) - offset[r][t];     \
    }

/* Q6_K: sub-block j (32 elements) of half h = j / 4 is ql's low (j % 4 < 2) or high
 * nibbles of bytes 64h + 32(j % 2), with bits 2(j % 4) of qh[32h..] on top: 0..63. The
 * -32 offset is taken off in 16 bits (maddubs of 32 with x, once per token), and the
 * two per-16 int8 scales applied by madd. */
static inline __m256i tk_q6_k_quants(const block_q6_k *b, int j)
{
    const __m256i low = _mm256_set1_epi8(0x0f), three = _mm256_set1_epi8(3);
    int h = j / 4, r = j % 4;
    __m256i ql = _mm256_loadu_si256((const __m256i *)(b->ql + 64 * h + 32 * (r & 1)));
    __m256i qh = _mm256_loadu_si256((const __m256i *)(b->qh + 32 * h));
    __m256i lo = _mm256_and_si256(r < 2 ? ql : _mm256_srli_epi16(ql, 4), low);
    __m256i hi = _mm256_and_si256(_mm256_srli_epi16(qh, 2 * r), three);
    return _mm256_or_si256(lo, _mm256_slli_epi16(hi, 4));
}

#define TK_DEFINE_Q6_K(RM, RN)                                                                  \
    static void TK_NAME(tile_q6_k_##RM##x##RN)(const void *w, size_t ws, const block_q8a *x,     \
                                                size_t xs, int nb, float *y, size_t ys)          \
    {                                                                                           \
        const __m256i k32 = _mm256_set1_epi8(32);                                               \
        __m256 acc[RM][RN];                                                                     \
        for (int r = 0; r < RM; r++)                                                            \
            for (int t = 0; t < RN; t++) acc[r][t] = _mm256_setzero_ps();                       \
        for (int i = 0; i < nb / 8; i++) {                                                      \
            const block_q6_k *blk[RM];                                                          \
            __m256 dw[RM];                                                                      \
            for (int r = 0; r < RM; r++) {                                                      \
                blk[r] = (const block_q6_k *)((const char *)w + r * ws) + i;                    \
                dw[r] = _mm256_set1_ps(tk_half(blk[r]->d));                                     \
            }                                                                                   \
            for (int j = 0; j < 8; j++) {                                                       \
                __m256i q[RM], sc[RM];                                                          \
                for (int r = 0; r < RM; r++) {                                                  \
                    q[r] = tk_q6_k_quants(blk[r], j);                                           \
                    sc[r] = _mm256_set_m128i(_mm_set1_epi16(blk[r]->scales[2 * j + 1]),         \
                                             _mm_set1_epi16(blk[r]->scales[2 * j]));            \
                }                                                                               \
                for (int t = 0; t < RN; t++) {                                                  \
                    const block_q8a *a = &x[t * xs + i * 8 + j];                                \
                    __m256i xv = _mm256_loadu_si256((const __m256i *)a->q);                     \
                    __m256i off = _mm256_maddubs_epi16(k32, xv);                                \
                    __m256 dx = _mm256_set1_ps(a->d);                                           \
                    for (int r = 0; r < RM; r++) {                                              \
                        __m256i p16 = _mm256_sub_epi16(_mm256_maddubs_epi16(q[r], xv), off);    \
                        __m256i p = _mm256_madd_epi16(p16, sc[r]);                              \
                        acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_mul_ps(dw[r], dx), \
                                                    acc[r][t]);                                 \
                    }                                                                           \
                }                                                                               \
            }                                                                                   \
        }                                                                                       \
        for (int r = 0; r < RM; r++)                                                            \
            for (int t = 0; t < RN; t++) y[t * ys + r] = tk_hsum(acc[r][t]);                    \
    }

#define TK_DEFINE_K_ALL(DEF)                                                                    \
    DEF(1, 1) DEF(1, 2) DEF(1, 3) DEF(1, 4) DEF(2, 1) DEF(2, 2) DEF(2, 3) DEF(2, 4)

TK_DEFINE_K_ALL(TK_DEFINE_Q4_K)
TK_DEFINE_K_ALL(TK_DEFINE_Q6_K)

#define TK_K_TABLE(prefix)                                                                      \
    {{TK_NAME(prefix##1x1), TK_NAME(prefix##1x2), TK_NAME(prefix##1x3), TK_NAME(prefix##1x4)},  \
     {TK_NAME(prefix##2x1), TK_NAME(prefix##2x2), TK_NAME(prefix##2x3), TK_NAME(prefix##2x4)}}

static const tk_fixed_fn tk_q4_k[2][4] = TK_K_TABLE(tile_q4_k_);
static const tk_fixed_fn tk_q6_k[2][4] = TK_K_TABLE(tile_q6_k_);

/* The caller's tile (up to 4 x 4) as row pairs; a single token (decode) goes row by row
 * through the dot product below, which streams faster than the pair tile. */
static inline void tk_k_tile(const tk_fixed_fn table[2][4], vec_dot_fn dot, const void *w, size_t ws,
                             const block_q8a *x, size_t xs, int nb, float *y, size_t ys, int rm, int rn)
{
    if (rn == 1) {
        for (int r = 0; r < rm; r++)
            y[r] = dot((const char *)w + r * ws, NULL, x, (int64_t)nb * QK);
        return;
    }
    for (int r = 0; r < rm; r += TK_K_ROWS) {
        int n = rm - r < TK_K_ROWS ? rm - r : TK_K_ROWS;
        table[n - 1][rn - 1]((const char *)w + r * ws, ws, x, xs, nb, y + r, ys);
    }
}

/* Q4_K: each 64-element chunk holds sub-block 2j in low nibbles and 2j+1 in high ones. */
static float TK_NAME(dot_q4_k)(const void *w, const float *x, const block_q8a *xq, int64_t n)
{
    (void)x;
    const block_q4_k *b = w;
    const __m256i low = _mm256_set1_epi8(0x0f);
    __m256 acc = _mm256_setzero_ps();
    float offset = 0.0f;
    for (int64_t i = 0; i < n / QK_K; i++) {
        float d = tk_half(b[i].d), dmin = tk_half(b[i].dmin);
        for (int j = 0; j < 4; j++) {
            __m256i raw = _mm256_loadu_si256((const __m256i *)(b[i].qs + 32 * j));
            __m256i q[2] = {_mm256_and_si256(raw, low), _mm256_and_si256(_mm256_srli_epi16(raw, 4), low)};
            for (int h = 0; h < 2; h++) {
                const block_q8a *a = &xq[i * 8 + 2 * j + h];
                int sc, m;
                tk_q4_k_scale_min(2 * j + h, b[i].scales, &sc, &m);
                __m256i xv = _mm256_loadu_si256((const __m256i *)a->q);
                __m256i isum = tk_widen(_mm256_maddubs_epi16(q[h], xv));
                acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_set1_ps(d * sc * a->d), acc);
                offset += dmin * m * a->s;
            }
        }
    }
    return tk_hsum(acc) - offset;
}

/* Q6_K: the four 32-element rows of each half rebuilt from ql and qh as 0..63; the -32
 * offset is taken off in 16 bits, and the per-16 scales applied by madd. */
static float TK_NAME(dot_q6_k)(const void *w, const float *x, const block_q8a *xq, int64_t n)
{
    (void)x;
    const block_q6_k *b = w;
    const __m256i low = _mm256_set1_epi8(0x0f), three = _mm256_set1_epi8(3), k32 = _mm256_set1_epi8(32);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK_K; i++) {
        float d = tk_half(b[i].d);
        for (int half = 0; half < 2; half++) {
            __m256i ql0 = _mm256_loadu_si256((const __m256i *)(b[i].ql + 64 * half));
            __m256i ql1 = _mm256_loadu_si256((const __m256i *)(b[i].ql + 64 * half + 32));
            __m256i qh = _mm256_loadu_si256((const __m256i *)(b[i].qh + 32 * half));
            __m256i rows[4] = {
                _mm256_or_si256(_mm256_and_si256(ql0, low), _mm256_slli_epi16(_mm256_and_si256(qh, three), 4)),
                _mm256_or_si256(_mm256_and_si256(ql1, low),
                                _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), three), 4)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), low),
                                _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), three), 4)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), low),
                                _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), three), 4)),
            };
            for (int r = 0; r < 4; r++) {
                const block_q8a *a = &xq[i * 8 + half * 4 + r];
                const int8_t *sc = b[i].scales + half * 8 + r * 2;
                __m256i xv = _mm256_loadu_si256((const __m256i *)a->q);
                __m256i p16 = _mm256_sub_epi16(_mm256_maddubs_epi16(rows[r], xv), _mm256_maddubs_epi16(k32, xv));
                __m256i scales = _mm256_set_m128i(_mm_set1_epi16(sc[1]), _mm_set1_epi16(sc[0]));
                __m256i isum = _mm256_madd_epi16(p16, scales);
                acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_set1_ps(d * a->d), acc);
            }
        }
    }
    return tk_hsum(acc);
}

static void TK_NAME(tile_q4_k)(const void *w, size_t ws, const block_q8a *x, size_t xs, int nb,
                                float *y, size_t ys, int rm, int rn)
{
    tk_k_tile(tk_q4_k, TK_NAME(dot_q4_k), w, ws, x, xs, nb, y, ys, rm, rn);
}
static void TK_NAME(tile_q6_k)(const void *w, size_t ws, const block_q8a *x, size_t xs, int nb,
                                float *y, size_t ys, int rm, int rn)
{
    tk_k_tile(tk_q6_k, TK_NAME(dot_q6_k), w, ws, x, xs, nb, y, ys, rm, rn);
}

#endif
