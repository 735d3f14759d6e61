/* quant.c - weight formats: conversions, the portable (scalar) dot products, and the
 * dispatch to the SIMD kernels (see quant.h for the block layouts).
 *
 * The scalar code here is the reference: every SIMD kernel in quant_avx2.c and
 * quant_avx512.c computes the same sums, and tests/unit/test_quant.c holds them to it.
 * Layouts and formulas follow ggml's, so GGUF weights are used as they are stored.
 */
#include "cpu/quant.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>

#include "cpu/quant_simd.h"
#include "cpu/simd.h"

/* ---- block layouts (defined in quant_simd.h) -------------------------------------- */

_Static_assert(sizeof(block_q8_0) == 34, "Q8_0 block");
_Static_assert(sizeof(block_q4_0) == 18, "Q4_0 block");
_Static_assert(sizeof(block_q4_1) == 20, "Q4_1 block");
_Static_assert(sizeof(block_q4_k) == 144, "Q4_K block");
_Static_assert(sizeof(block_q6_k) == 210, "Q6_K block");

/* ---- half floats ------------------------------------------------------------------ */

float fp16_to_fp32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (mant << 13);            /* inf, nan */
    } else if (exp == 0) {
        float f = ldexpf((float)mant, -24);                   /* zero, subnormal */
        return sign ? -f : f;
    } else {
        bits = sign | ((exp + 112) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t fp32_to_fp16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u)                                     /* inf, nan (kept quiet) */
        return sign | 0x7c00 | (ax > 0x7f800000u ? 0x200 : 0);
    if (ax >= 0x477ff000u)                                     /* rounds past 65504 */
        return sign | 0x7c00;
    if (ax < 0x38800000u) {                                    /* below 2^-14: subnormal */
        float a;
        memcpy(&a, &ax, 4);
        return sign | (uint16_t)lrintf(a * 16777216.0f);       /* a / 2^-24, ties to even */
    }
    uint32_t mant = ax & 0x7fffff, exp = (ax >> 23) - 112;
    uint32_t h = (exp << 10) | (mant >> 13);
    uint32_t rest = mant & 0x1fff;                             /* round to nearest even */
    if (rest > 0x1000 || (rest == 0x1000 && (h & 1)))
        h++;
    return sign | (uint16_t)h;
}

float bf16_to_fp32(uint16_t h)
{
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t fp32_to_bf16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((x >> 16) | 0x40);                   /* nan stays nan */
    x += 0x7fff + ((x >> 16) & 1);                             /* round to nearest even */
    return (uint16_t)(x >> 16);
}

/* ---- dequantize ------------------------------------------------------------------- */

static void dequantize_q8_0(const block_q8_0 *b, float *y, int64_t n)
{
    for (int64_t i = 0; i < n / QK; i++) {
        float d = fp16_to_fp32(b[i].d);
        for (int j = 0; j < QK; j++)
            y[i * QK + j] = d * b[i].qs[j];
    }
}

static void dequantize_q4_0(const block_q4_0 *b, float *y, int64_t n)
{
    for (int64_t i = 0; i < n / QK; i++) {
        float d = fp16_to_fp32(b[i].d);
        for (int j = 0; j < QK / 2; j++) {
            y[i * QK + j] = d * ((b[i].qs[j] & 0xf) - 8);
            y[i * QK + j + QK / 2] = d * ((b[i].qs[j] >> 4) - 8);
        }
    }
}

static void dequantize_q4_1(const block_q4_1 *b, float *y, int64_t n)
{
    for (int64_t i = 0; i < n / QK; i++) {
        float d = fp16_to_fp32(b[i].d), m = fp16_to_fp32(b[i].m);
        for (int j = 0; j < QK / 2; j++) {
            y[i * QK + j] = d * (b[i].qs[j] & 0xf) + m;
            y[i * QK + j + QK / 2] = d * (b[i].qs[j] >> 4) + m;
        }
    }
}

/* Scale and min of sub-block j (0..7) from the 12 packed bytes: the first four keep
 * 6 bits in bytes 0..7; the last four keep their low 4 bits in bytes 8..11 and their
 * top 2 bits in the spare top bits of bytes 0..7. */
static void q4_k_scale_min(int j, const uint8_t *s, int *scale, int *min)
{
    if (j < 4) {
        *scale = s[j] & 63;
        *min = s[j + 4] & 63;
    } else {
        *scale = (s[j + 4] & 0xf) | ((s[j - 4] >> 6) << 4);
        *min = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

/* The 4-bit quant of element e (0..255) of a Q4_K block: each 64-element chunk stores
 * its first 32 in low nibbles and its second 32 in high nibbles of 32 bytes. */
static inline int q4_k_quant(const block_q4_k *b, int e)
{
    uint8_t byte = b->qs[(e / 64) * 32 + e % 32];
    return (e % 64) < 32 ? byte & 0xf : byte >> 4;
}

static void dequantize_q4_k(const block_q4_k *b, float *y, int64_t n)
{
    for (int64_t i = 0; i < n / QK_K; i++) {
        float d = fp16_to_fp32(b[i].d), dmin = fp16_to_fp32(b[i].dmin);
        for (int j = 0; j < 8; j++) {
            int sc, m;
            q4_k_scale_min(j, b[i].scales, &sc, &m);
            for (int l = 0; l < 32; l++)
                y[i * QK_K + j * 32 + l] = d * sc * q4_k_quant(&b[i], j * 32 + l) - dmin * m;
        }
    }
}

/* The 6-bit quant (0..63) of element e of a Q6_K block: each 128-element half stores
 * four 32-element rows; rows 0/1 in the low nibbles of ql[0..63], rows 2/3 in the high
 * nibbles, and the top two bits of all four in one qh byte per column. */
static inline int q6_k_quant(const block_q6_k *b, int e)
{
    int half = e / 128, row = (e % 128) / 32, col = e % 32;
    uint8_t lo = b->ql[half * 64 + (row & 1) * 32 + col];
    int low4 = row < 2 ? lo & 0xf : lo >> 4;
    int high2 = (b->qh[half * 32 + col] >> (2 * row)) & 3;
    return low4 | (high2 << 4);
}

static void dequantize_q6_k(const block_q6_k *b, float *y, int64_t n)
{
    for (int64_t i = 0; i < n / QK_K; i++) {
        float d = fp16_to_fp32(b[i].d);
        for (int e = 0; e < QK_K; e++)
            y[i * QK_K + e] = d * b[i].scales[e / 16] * (q6_k_quant(&b[i], e) - 32);
    }
}

void dequantize_row(enum tensor_type type, const void *src, float *dst, int64_t n)
{
    const uint16_t *h = src;
    switch (type) {
    case TENSOR_F32: memcpy(dst, src, sizeof(float) * (size_t)n); break;
    case TENSOR_F16:
        if (simd_level() >= SIMD_AVX2)
            fp16_to_fp32_row_avx2(h, dst, n);
        else
            for (int64_t i = 0; i < n; i++) dst[i] = fp16_to_fp32(h[i]);
        break;
    case TENSOR_BF16: for (int64_t i = 0; i < n; i++) dst[i] = bf16_to_fp32(h[i]); break;
    case TENSOR_Q8_0: dequantize_q8_0(src, dst, n); break;
    case TENSOR_Q4_0: dequantize_q4_0(src, dst, n); break;
    case TENSOR_Q4_1: dequantize_q4_1(src, dst, n); break;
    case TENSOR_Q4_K: dequantize_q4_k(src, dst, n); break;
    case TENSOR_Q6_K: dequantize_q6_k(src, dst, n); break;
    default: memset(dst, 0, sizeof(float) * (size_t)n); break;
    }
}

/* ---- quantize --------------------------------------------------------------------- */

static float max_abs(const float *x, int n)
{
    float m = 0.0f;
    for (int i = 0; i < n; i++)
        m = fmaxf(m, fabsf(x[i]));
    return m;
}

static void quantize_q8_0(const float *x, block_q8_0 *b, int64_t n)
{
    for (int64_t i = 0; i < n / QK; i++, x += QK) {
        float d = max_abs(x, QK) / 127.0f, id = d ? 1.0f / d : 0.0f;
        b[i].d = fp32_to_fp16(d);
        for (int j = 0; j < QK; j++)
            b[i].qs[j] = (int8_t)lrintf(x[j] * id);
    }
}

/* Q4_0 maps the value of largest magnitude to -8, which uses the whole signed range. */
static void quantize_q4_0(const float *x, block_q4_0 *b, int64_t n)
{
    for (int64_t i = 0; i < n / QK; i++, x += QK) {
        float extreme = 0.0f;
        for (int j = 0; j < QK; j++)
            if (fabsf(x[j]) > fabsf(extreme)) extreme = x[j];
        float d = extreme / -8.0f, id = d ? 1.0f / d : 0.0f;
        b[i].d = fp32_to_fp16(d);
        for (int j = 0; j < QK / 2; j++) {
            int q0 = (int)fminf(15.0f, fmaxf(0.0f, floorf(x[j] * id + 8.5f)));
            int q1 = (int)fminf(15.0f, fmaxf(0.0f, floorf(x[j + QK / 2] * id + 8.5f)));
            b[i].qs[j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

static void quantize_q4_1(const float *x, block_q4_1 *b, int64_t n)
{
    for (int64_t i = 0; i < n / QK; i++, x += QK) {
        float lo = x[0], hi = x[0];
        for (int j = 1; j < QK; j++) {
            lo = fminf(lo, x[j]);
            hi = fmaxf(hi, x[j]);
        }
        float d = (hi - lo) / 15.0f, id = d ? 1.0f / d : 0.0f;
        b[i].d = fp32_to_fp16(d);
        b[i].m = fp32_to_fp16(lo);
        for (int j = 0; j < QK / 2; j++) {
            int q0 = (int)fminf(15.0f, floorf((x[j] - lo) * id + 0.5f));
            int q1 = (int)fminf(15.0f, floorf((x[j + QK / 2] - lo) * id + 0.5f));
            b[i].qs[j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

static void q4_k_pack_scales(uint8_t *s, const int *sc, const int *m)
{
    memset(s, 0, 12);
    for (int j = 0; j < 8; j++) {
        if (j < 4) {
            s[j] = (uint8_t)sc[j];
            s[j + 4] = (uint8_t)m[j];
        } else {
            s[j + 4] = (uint8_t)((sc[j] & 0xf) | ((m[j] & 0xf) << 4));
            s[j - 4] |= (uint8_t)((sc[j] >> 4) << 6);
            s[j] |= (uint8_t)((m[j] >> 4) << 6);
        }
    }
}

/* Per 32-element sub-block: the range [min(x, 0), max(x)] in 15 steps; the step and the
 * offset are then themselves quantized to 6 bits against the block's d and dmin. */
static void quantize_q4_k_block(const float *x, block_q4_k *b)
{
    float step[8], offset[8], max_step = 0.0f, max_offset = 0.0f;
    for (int j = 0; j < 8; j++) {
        float lo = 0.0f, hi = 0.0f;
        for (int l = 0; l < 32; l++) {
            lo = fminf(lo, x[j * 32 + l]);
            hi = fmaxf(hi, x[j * 32 + l]);
        }
        step[j] = (hi - lo) / 15.0f;
        offset[j] = -lo;
        max_step = fmaxf(max_step, step[j]);
        max_offset = fmaxf(max_offset, offset[j]);
    }
    float d = max_step / 63.0f, dmin = max_offset / 63.0f;
    b->d = fp32_to_fp16(d);
    b->dmin = fp32_to_fp16(dmin);
    d = fp16_to_fp32(b->d);
    dmin = fp16_to_fp32(b->dmin);
    int sc[8], m[8];
    for (int j = 0; j < 8; j++) {
        sc[j] = d ? (int)fminf(63.0f, lrintf(step[j] / d)) : 0;
        m[j] = dmin ? (int)fminf(63.0f, lrintf(offset[j] / dmin)) : 0;
    }
    q4_k_pack_scales(b->scales, sc, m);
    memset(b->qs, 0, sizeof b->qs);
    for (int e = 0; e < QK_K; e++) {
        int j = e / 32;
        float s = d * sc[j];
        int q = s ? (int)lrintf((x[e] + dmin * m[j]) / s) : 0;
        q = q < 0 ? 0 : q > 15 ? 15 : q;
        b->qs[(e / 64) * 32 + e % 32] |= (uint8_t)((e % 64) < 32 ? q : q << 4);
    }
}

static void quantize_q6_k_block(const float *x, block_q6_k *b)
{
    float step[16], max_step = 0.0f;
    for (int g = 0; g < 16; g++) {
        step[g] = max_abs(x + g * 16, 16) / 31.0f;
        max_step = fmaxf(max_step, step[g]);
    }
    float d = max_step / 127.0f;
    b->d = fp32_to_fp16(d);
    d = fp16_to_fp32(b->d);
    for (int g = 0; g < 16; g++)
        b->scales[g] = (int8_t)(d ? fminf(127.0f, lrintf(step[g] / d)) : 0);
    memset(b->ql, 0, sizeof b->ql);
    memset(b->qh, 0, sizeof b->qh);
    for (int e = 0; e < QK_K; e++) {
        float s = d * b->scales[e / 16];
        int q = s ? (int)lrintf(x[e] / s) : 0;
        q = (q < -32 ? -32 : q > 31 ? 31 : q) + 32;
        int half = e / 128, row = (e % 128) / 32, col = e % 32;
        b->ql[half * 64 + (row & 1) * 32 + col] |= (uint8_t)(row < 2 ? q & 0xf : (q & 0xf) << 4);
        b->qh[half * 32 + col] |= (uint8_t)((q >> 4) << (2 * row));
    }
}

int quantize_row(enum tensor_type type, const float *src, void *dst, int64_t n)
{
    uint16_t *h = dst;
    switch (type) {
    case TENSOR_F32: memcpy(dst, src, sizeof(float) * (size_t)n); return 0;
    case TENSOR_F16:
        if (simd_level() >= SIMD_AVX2)
            fp32_to_fp16_row_avx2(src, h, n);
        else
            for (int64_t i = 0; i < n; i++) h[i] = fp32_to_fp16(src[i]);
        return 0;
    case TENSOR_BF16: for (int64_t i = 0; i < n; i++) h[i] = fp32_to_bf16(src[i]); return 0;
    case TENSOR_Q8_0: quantize_q8_0(src, dst, n); return 0;
    case TENSOR_Q4_0: quantize_q4_0(src, dst, n); return 0;
    case TENSOR_Q4_1: quantize_q4_1(src, dst, n); return 0;
    case TENSOR_Q4_K:
        for (int64_t i = 0; i < n / QK_K; i++)
            quantize_q4_k_block(src + i * QK_K, (block_q4_k *)dst + i);
        return 0;
    case TENSOR_Q6_K:
        for (int64_t i = 0; i < n / QK_K; i++)
            quantize_q6_k_block(src + i * QK_K, (block_q6_k *)dst + i);
        return 0;
    default: return -1;
    }
}

static void quantize_row_q8a_scalar(const float *src, block_q8a *dst, int64_t n)
{
    for (int64_t i = 0; i < n / QK; i++, src += QK) {
        float d = max_abs(src, QK) / 127.0f, id = d ? 1.0f / d : 0.0f;
        int sum = 0;
        for (int j = 0; j < QK; j++) {
            dst[i].q[j] = (int8_t)lrintf(src[j] * id);
            sum += dst[i].q[j];
        }
        dst[i].d = d;
        dst[i].s = d * (float)sum;
    }
}

/* ---- scalar dot products ---------------------------------------------------------- */

static int dot_i8(const int8_t *a, const int8_t *b, int n)
{
    int s = 0;
    for (int i = 0; i < n; i++)
        s += a[i] * b[i];
    return s;
}

static float dot_q8_0(const void *w, const float *x, const block_q8a *xq, int64_t n)
{
    (void)x;
    const block_q8_0 *b = w;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / QK; i++)
        sum += fp16_to_fp32(b[i].d) * xq[i].d * (float)dot_i8(b[i].qs, xq[i].q, QK);
    return sum;
}

/* sum(q * xq) over a block of 16 nibble bytes: low nibbles meet xq[0..15], high [16..31]. */
static int dot_nibbles(const uint8_t *qs, const int8_t *xq)
{
    int s = 0;
    for (int j = 0; j < QK / 2; j++)
        s += (qs[j] & 0xf) * xq[j] + (qs[j] >> 4) * xq[j + QK / 2];
    return s;
}

static float dot_q4_0(const void *w, const float *x, const block_q8a *xq, int64_t n)
{
    (void)x;
    const block_q4_0 *b = w;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / QK; i++)  /* the -8 offset times sum(x) is 8 * s */
        sum += fp16_to_fp32(b[i].d) * (xq[i].d * (float)dot_nibbles(b[i].qs, xq[i].q) - 8.0f * xq[i].s);
    return sum;
}

static float dot_q4_1(const void *w, const float *x, const block_q8a *xq, int64_t n)
{
    (void)x;
    const block_q4_1 *b = w;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / QK; i++)
        sum += fp16_to_fp32(b[i].d) * xq[i].d * (float)dot_nibbles(b[i].qs, xq[i].q) +
               fp16_to_fp32(b[i].m) * xq[i].s;
    return sum;
}

static float dot_q4_k(const void *w, const float *x, const block_q8a *xq, int64_t n)
{
    (void)x;
    const block_q4_k *b = w;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / QK_K; i++) {
        float d = fp16_to_fp32(b[i].d), dmin = fp16_to_fp32(b[i].dmin);
        for (int j = 0; j < 8; j++) {
            const block_q8a *a = &xq[i * 8 + j];
            int sc, m, s = 0;
            q4_k_scale_min(j, b[i].scales, &sc, &m);
            for (int l = 0; l < 32; l++)
                s += q4_k_quant(&b[i], j * 32 + l) * a->q[l];
            sum += d * sc * a->d * (float)s - dmin * m * a->s;
        }
    }
    return sum;
}

static float dot_q6_k(const void *w, const float *x, const block_q8a *xq, int64_t n)
{
    (void)x;
    const block_q6_k *b = w;
    float sum = 0.0f;
    for (int64_t i = 0; i < n / QK_K; i++) {
        float d = fp16_to_fp32(b[i].d);
        for (int j = 0; j < 8; j++) {
            const block_q8a *a = &xq[i * 8 + j];
            int s = 0;
            for (int half = 0; half < 2; half++) {
                int g = 0;
                for (int l = half * 16; l < half * 16 + 16; l++)
                    g += (q6_k_quant(&b[i], j * 32 + l) - 32) * a->q[l];
                s += b[i].scales[j * 2 + half] * g;
            }
            sum += d * a->d * (float)s;
        }
    }
    return sum;
}

static float dot_f32(const void *w, const float *x, const block_q8a *xq, int64_t n)
{
    (void)xq;
    const float *a = w;
    float sum = 0.0f;
    for (int64_t i = 0; i < n; i++)
        sum += a[i] * x[i];
    return sum;
}

static float dot_f16(const void *w, const float *x, const block_q8a *xq, int64_t n)
{
    (void)xq;
    const uint16_t *a = w;
    float sum = 0.0f;
    for (int64_t i = 0; i < n; i++)
        sum += fp16_to_fp32(a[i]) * x[i];
    return sum;
}

static float dot_bf16(const void *w, const float *x, const block_q8a *xq, int64_t n)
{
    (void)xq;
    const uint16_t *a = w;
    float sum = 0.0f;
    for (int64_t i = 0; i < n; i++)
        sum += bf16_to_fp32(a[i]) * x[i];
    return sum;
}

static vec_dot_fn scalar_kernel(enum tensor_type type)
{
    switch (type) {
    case TENSOR_F32: return dot_f32;
    case TENSOR_F16: return dot_f16;
    case TENSOR_BF16: return dot_bf16;
    case TENSOR_Q8_0: return dot_q8_0;
    case TENSOR_Q4_0: return dot_q4_0;
    case TENSOR_Q4_1: return dot_q4_1;
    case TENSOR_Q4_K: return dot_q4_k;
    case TENSOR_Q6_K: return dot_q6_k;
    default: return NULL;
    }
}

/* ---- dispatch --------------------------------------------------------------------- */

/* The kernel for a type at a level: the level's own when it has one, else the next
 * level down's. Only asked for levels the CPU has (simd_level() is capped), so the
 * AVX-512 file's code never runs on a machine without it. */
static vec_dot_fn kernel_for(enum tensor_type type, enum simd_level level)
{
    vec_dot_fn f = NULL;
    if (level >= SIMD_AVX512)
        f = vec_dot_kernel_avx512(type);
    if (f == NULL && level >= SIMD_AVX2)
        f = vec_dot_kernel_avx2(type);
    return f ? f : scalar_kernel(type);
}

/* vec_dot runs once per output row, so the choice is made once per level into a table
 * and each call is then one acquire load and one indexed load. */
static vec_dot_fn kernel_table[SIMD_AVX512 + 1][TENSOR_TYPE_MAX];
static atomic_bool table_ready[SIMD_AVX512 + 1];
static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;

static const vec_dot_fn *kernels_at(enum simd_level level)
{
    if (!atomic_load_explicit(&table_ready[level], memory_order_acquire)) {
        pthread_mutex_lock(&table_lock);
        if (!atomic_load_explicit(&table_ready[level], memory_order_relaxed)) {
            for (int t = 0; t < TENSOR_TYPE_MAX; t++)
                kernel_table[level][t] = kernel_for((enum tensor_type)t, level);
            atomic_store_explicit(&table_ready[level], true, memory_order_release);
        }
        pthread_mutex_unlock(&table_lock);
    }
    return kernel_table[level];
}

float vec_dot(enum tensor_type type, const void *w, const float *x, const block_q8a *xq, int64_t n)
{
    if ((unsigned)type >= TENSOR_TYPE_MAX)
        return 0.0f;
    vec_dot_fn f = kernels_at(simd_level())[type];
    return f ? f(w, x, xq, n) : 0.0f;
}

void quantize_row_q8a(const float *src, block_q8a *dst, int64_t n)
{
    switch (simd_level()) {
    case SIMD_AVX512: quantize_row_q8a_avx512(src, dst, n); break;
    case SIMD_AVX2: quantize_row_q8a_avx2(src, dst, n); break;
    default: quantize_row_q8a_scalar(src, dst, n); break;
    }
}

float vec_dot_f16(const uint16_t *k, const float *x, int64_t n)
{
    if (simd_level() >= SIMD_AVX2)
        return vec_dot_f16_avx2(k, x, n);
    float sum = 0.0f;
    for (int64_t i = 0; i < n; i++)
        sum += fp16_to_fp32(k[i]) * x[i];
    return sum;
}

void axpy_f16(float *y, float a, const uint16_t *v, int64_t n)
{
    if (simd_level() >= SIMD_AVX2) {
        axpy_f16_avx2(y, a, v, n);
        return;
    }
    for (int64_t i = 0; i < n; i++)
        y[i] += a * fp16_to_fp32(v[i]);
}

int type_uses_q8a(enum tensor_type type)
{
    return type == TENSOR_Q8_0 || type == TENSOR_Q4_0 || type == TENSOR_Q4_1 ||
           type == TENSOR_Q4_K || type == TENSOR_Q6_K;
}
