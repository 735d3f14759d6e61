/* quant_avx512.c - the AVX-512 (VNNI, VL) kernels behind vec_dot and matmul (see
 * quant_simd.h). The tile bodies live in tile_kernels.h, shared with the AVX2 file; this
 * file supplies the 8-bit dot product as one VNNI instruction (vpdpbusd on 256-bit
 * registers: Zen 4 splits 512-bit ops in two anyway, and a 32-element block fills one). */
#include <immintrin.h>

#include "cpu/quant_simd.h"

/* VNNI: one instruction for the 4-byte unsigned-by-signed dot products. */
static inline __m256i dot_u8_s8(__m256i u, __m256i s)
{
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s);
}

#define DOT_U8_S8(u, s) dot_u8_s8(u, s)
#define KERNEL_SUFFIX avx512
#include "cpu/tile_kernels.h"

vec_dot_fn vec_dot_kernel_avx512(enum tensor_type type)
{
    switch (type) {
    case TENSOR_F32: return dot_f32_avx512;
    case TENSOR_F16: return dot_f16_avx512;
    case TENSOR_BF16: return dot_bf16_avx512;
    case TENSOR_Q8_0: return dot_q8_0_avx512;
    case TENSOR_Q4_0: return dot_q4_0_avx512;
    case TENSOR_Q4_1: return dot_q4_1_avx512;
    case TENSOR_Q4_K: return dot_q4_k_avx512;
    case TENSOR_Q6_K: return dot_q6_k_avx512;
    default: return NULL;
    }
}

gemm_tile_fn gemm_tile_kernel_avx512(enum tensor_type type)
{
    switch (type) {
    case TENSOR_Q8_0: return tile_q8_0_avx512;
    case TENSOR_Q4_0: return tile_q4_0_avx512;
    case TENSOR_Q4_1: return tile_q4_1_avx512;
    case TENSOR_Q4_K: return tile_q4_k_avx512;
    case TENSOR_Q6_K: return tile_q6_k_avx512;
    default: return NULL;
    }
}

void quantize_row_q8a_avx512(const float *src, block_q8a *dst, int64_t n)
{
    quantize_q8a_avx512(src, dst, n);
}
