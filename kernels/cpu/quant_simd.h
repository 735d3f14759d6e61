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

#include <stdint.h>

#include "cpu/quant.h"

/* Same meaning as vec_dot(): x is the f32 row (F32/F16/BF16 weights), xq the q8a row
 * (quantized weights); n elements. */
typedef float (*vec_dot_fn)(const void *w, const float *x, const block_q8a *xq, int64_t n);

vec_dot_fn vec_dot_kernel_avx2(enum tensor_type type);
vec_dot_fn vec_dot_kernel_avx512(enum tensor_type type);

/* quantize_row_q8a at these levels (same result as the scalar version: round to
 * nearest, d = max|x|/127). */
void quantize_row_q8a_avx2(const float *src, block_q8a *dst, int64_t n);
void quantize_row_q8a_avx512(const float *src, block_q8a *dst, int64_t n);

#endif
