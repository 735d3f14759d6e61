/* quant.h - weight formats: conversion to and from f32, and the quantized dot products
 * that every matrix product in the engine is built on.
 *
 * Block formats are ggml's, so GGUF files are used as they are (sizes per block):
 *   Q8_0  32 elems: f16 d, int8 q[32]                     x = d*q
 *   Q4_0  32 elems: f16 d, 16 bytes of nibbles            x = d*(q-8)
 *   Q4_1  32 elems: f16 d, f16 m, 16 bytes of nibbles     x = d*q + m
 *   Q4_K 256 elems: super-block of 8 sub-blocks with 6-bit scales and mins
 *   Q6_K 256 elems: 16 sub-blocks, 6-bit quants, int8 scales
 *   F16, BF16, F32
 *
 * Activations are quantized per 32-element block to "q8a" (below) before a product with
 * a quantized weight, as llama.cpp does, so the inner loop is an integer dot product
 * (AVX2 maddubs, AVX-512 VNNI). The block also stores the sum of its quants, which
 * turns the offsets of Q4_0 (-8) and Q4_1 (+m) into one multiply per block.
 */
#ifndef CITADEL_QUANT_H
#define CITADEL_QUANT_H

#include <stddef.h>
#include <stdint.h>

#include "gguf/gguf.h"

#define QK 32        /* elements per block of the 32-wide formats and of q8a */
#define QK_K 256     /* elements per super-block of the K formats */

/* One activation block: x[i] ~= d * q[i]; s = d * sum(q). */
typedef struct block_q8a {
    float d;
    float s;
    int8_t q[QK];
} block_q8a;

float fp16_to_fp32(uint16_t h);
uint16_t fp32_to_fp16(float f);
float bf16_to_fp32(uint16_t h);
uint16_t fp32_to_bf16(float f);

/* dst[0..n) = the n values stored in src (a row of `type`). n a multiple of the block. */
void dequantize_row(enum tensor_type type, const void *src, float *dst, int64_t n);

/* Stores n f32 values as a row of `type` (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q6_K)
 * with round-to-nearest scales. Returns 0, or -1 when the type cannot be written. */
int quantize_row(enum tensor_type type, const float *src, void *dst, int64_t n);

/* n (a multiple of 32) activations to n/32 q8a blocks. */
void quantize_row_q8a(const float *src, block_q8a *dst, int64_t n);

/* dot(weight row of `type`, activations) over n elements. For F32/F16/BF16 weights `x`
 * is the f32 activation row; for quantized weights `xq` is the q8a row. Dispatches on
 * simd_level(). */
float vec_dot(enum tensor_type type, const void *w, const float *x, const block_q8a *xq, int64_t n);

/* Attention over an f16 KV cache without converting rows first: vec_dot_f16(k, x, n)
 * equals vec_dot(TENSOR_F32, k widened to f32, x, NULL, n) bit for bit (the same sums
 * in the same order at every SIMD level), and axpy_f16(y, a, v, n) does
 * y[i] += a * v[i] exactly as the plain f32 loop does (a product, then a sum). */
float vec_dot_f16(const uint16_t *k, const float *x, int64_t n);
void axpy_f16(float *y, float a, const uint16_t *v, int64_t n);

/* True when products with this weight type use q8a activations. */
int type_uses_q8a(enum tensor_type type);

#endif
