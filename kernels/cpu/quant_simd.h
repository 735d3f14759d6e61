/* quant_simd.h - the contract between quant.c (portable code, dispatch) and the
 * instruction-set specific kernels in quant_avx2.c and quant_avx512.c.
 *
 * Internal to kernels/cpu: nothing outside it includes this. quant.c's vec_dot() asks
 * vec_dot_kernel_avx2()/vec_dot_kernel_avx512() for a kernel for the weight type and
 * uses it when simd_level() allows; NULL means "no special kernel, use the scalar one".
 * The kernels compute exactly what the scalar reference computes (up to float
 * summation order), which tests/unit/test_quant.c checks at every level.
 */
#ifndef CITADEL_QUANT_SIMD_H
#define CITADEL_QUANT_SIMD_H

#include <stddef.h>
#include <stdint.h>

#include "cpu/quant.h"

/* ggml's block layouts (sizes checked in quant.c). */
typedef struct { uint16_t d; int8_t qs[QK]; } block_q8_0;
typedef struct { uint16_t d; uint8_t qs[QK / 2]; } block_q4_0;      /* low nibbles: 0..15, high: 16..31 */
typedef struct { uint16_t d, m; uint8_t qs[QK / 2]; } block_q4_1;
/* x = d*sc*q - dmin*m per 32-element sub-block; sc, m are 6-bit, packed in scales[12] */
typedef struct { uint16_t d, dmin; uint8_t scales[12]; uint8_t qs[QK_K / 2]; } block_q4_k;
/* x = d*sc*(q-32) per 16-element group; q is 6 bits: low 4 in ql, high 2 in qh */
typedef struct { uint8_t ql[QK_K / 2]; uint8_t qh[QK_K / 4]; int8_t scales[QK_K / 16]; uint16_t d; } block_q6_k;

/* Same meaning as vec_dot(): x is the f32 row (F32/F16/BF16 weights), xq the q8a row
 * (quantized weights); n elements. */
typedef float (*vec_dot_fn)(const void *w, const float *x, const block_q8a *xq, int64_t n);

vec_dot_fn vec_dot_kernel_avx2(enum tensor_type type);
vec_dot_fn vec_dot_kernel_avx512(enum tensor_type type);

/* A tile of a matrix product with q8a activations: for r < rm (<= 4) weight rows and
 * t < rn (<= 4) tokens, y[t * y_stride + r] = dot(row r, token t) over nb blocks of 32.
 * Row r starts at (char *)w + r * w_stride; token t's blocks at x + t * x_stride. The
 * caller walks the tiles (matmul.c); a kernel keeps the whole tile in registers, so
 * each weight block loaded from memory serves rn tokens. */
typedef void (*gemm_tile_fn)(const void *w, size_t w_stride, const block_q8a *x, size_t x_stride,
                             int nb, float *y, size_t y_stride, int rm, int rn);

gemm_tile_fn gemm_tile_kernel_avx2(enum tensor_type type);
gemm_tile_fn gemm_tile_kernel_avx512(enum tensor_type type);

/* quantize_row_q8a at these levels (same result as the scalar version: round to
 * nearest, d = max|x|/127). */
void quantize_row_q8a_avx2(const float *src, block_q8a *dst, int64_t n);
void quantize_row_q8a_avx512(const float *src, block_q8a *dst, int64_t n);

#endif
