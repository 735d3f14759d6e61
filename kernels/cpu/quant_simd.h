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

/* Packed weights (matmul_pack): 8 rows interleaved so that one 32-byte vector holds 4
 * consecutive quants of each of the 8 rows, and one multiply-add against 4 broadcast
 * activation bytes advances all 8 rows' dot products at once (instead of one row's
 * followed by a horizontal sum). Per group of 8 rows and block of 32 columns:
 *     dot(row, x-block) = d * dx * sum(q * xq) + c * s        (s: the q8a block sum)
 *   Q8_0: q signed as stored, c = 0     Q4_0: q = nibble, c = -8 d     Q4_1: q = nibble, c = m
 * A matrix is stored group after group, each group block after block. */
#define PACK_ROWS 8
/* Q8_0: byte 32k + 4i + j is row i's quant 4k+j. */
typedef struct { uint16_t d[PACK_ROWS], c[PACK_ROWS]; int8_t q[PACK_ROWS * QK]; } packed_q8x8;
/* Q4_x: byte 32k + 4i + j (k < 4) holds row i's nibbles for elements 4k+j (low) and
 * 16+4k+j (high), which is the raw block's byte 4k+j: packing is a shuffle. */
typedef struct { uint16_t d[PACK_ROWS], c[PACK_ROWS]; uint8_t q[PACK_ROWS * QK / 2]; } packed_q4x8;

/* y[t * y_stride + 8g + i] for groups [g0, g1) and tokens [0, T) of a packed matrix
 * with nb blocks per row; x holds T rows of nb q8a blocks. type is Q8_0, Q4_0 or Q4_1.
 * AVX2 code, used on AVX-512 CPUs too. */
void packed_gemm_avx2(enum tensor_type type, const void *packed, int g0, int g1, int nb,
                      const block_q8a *x, int T, float *y, size_t y_stride);

/* F16 rows to and from f32 with F16C: exact one way, round to nearest even the other,
 * the same as the scalar fp16_to_fp32 / fp32_to_fp16 (dequantize_row and quantize_row
 * use them at the AVX2 level and above). */
void fp16_to_fp32_row_avx2(const uint16_t *src, float *dst, int64_t n);
/* vec_dot_f16 and axpy_f16 (quant.h) at these levels; the dot sums as dot_f32 does. */
float vec_dot_f16_avx2(const uint16_t *k, const float *x, int64_t n);
void axpy_f16_avx2(float *y, float a, const uint16_t *v, int64_t n);
void fp32_to_fp16_row_avx2(const float *src, uint16_t *dst, int64_t n);

/* quantize_row_q8a at these levels (same result as the scalar version: round to
 * nearest, d = max|x|/127). */
void quantize_row_q8a_avx2(const float *src, block_q8a *dst, int64_t n);
void quantize_row_q8a_avx512(const float *src, block_q8a *dst, int64_t n);

#endif
