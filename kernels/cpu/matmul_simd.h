/* matmul_simd.h - the float-weight tiles of matmul.c, in matmul_avx2.c (compiled with
 * AVX2+FMA+F16C, used at the AVX2 and AVX-512 levels). Internal to kernels/cpu.
 *
 * Quantized weights go through quant_simd.h's tiles; F32, F16 and BF16 weights meet
 * the f32 activations directly, and without a tile each token would reread every
 * weight row (T vec_dots per row), which leaves prefill at a fifth of its speed.
 */
#ifndef CITADEL_MATMUL_SIMD_H
#define CITADEL_MATMUL_SIMD_H

#include <stddef.h>

#include "gguf/gguf.h"

/* For r < rm (<= 4) rows of `type` (F32, F16 or BF16) starting w_stride bytes apart
 * and t < rn (<= 4) tokens of C floats starting x_stride floats apart:
 * y[t * y_stride + r] = dot(row r, token t). C a multiple of 8. */
void float_tile_avx2(enum tensor_type type, const void *w, size_t w_stride, const float *x,
                     size_t x_stride, int C, float *y, size_t y_stride, int rm, int rn);

#endif
