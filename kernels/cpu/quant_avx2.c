/* quant_avx2.c - the AVX2 (+FMA, F16C) kernels behind vec_dot and matmul (see
 * quant_simd.h). The tile bodies live in tile_kernels.h, shared with the AVX-512 file;
 * this file supplies the 8-bit dot product: maddubs then madd. */
#include <immintrin.h>

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
    case TENSOR_Q8_0: return dot_q8_0_avx2;
    case TENSOR_Q4_0: return dot_q4_0_avx2;
    case TENSOR_Q4_1: return dot_q4_1_avx2;
    default: return NULL;
    }
}

gemm_tile_fn gemm_tile_kernel_avx2(enum tensor_type type)
{
    switch (type) {
    case TENSOR_Q8_0: return tile_q8_0_avx2;
    case TENSOR_Q4_0: return tile_q4_0_avx2;
    case TENSOR_Q4_1: return tile_q4_1_avx2;
    default: return NULL;
    }
}

void quantize_row_q8a_avx2(const float *src, block_q8a *dst, int64_t n)
{
    quantize_q8a_avx2(src, dst, n);
}
