/* matmul.h - the matrix products of the forward pass: y = x W^T with W quantized.
 *
 * Shapes (llm.c notation): W is (OC, C) stored in `type`, one row per output channel;
 * x is (T, C) f32, T tokens; y is (T, OC) f32. T = 1 in decode (a matrix-vector product,
 * bound by memory bandwidth: each weight byte is read once) and T = prompt chunk in
 * prefill (bound by arithmetic: the kernel tiles several rows by several tokens so each
 * weight block loaded is used for all of them). Work is split over output channels
 * across the pool. This is where most of the running time is spent.
 */
#ifndef CITADEL_MATMUL_H
#define CITADEL_MATMUL_H

#include <stdint.h>

#include "cpu/threadpool.h"
#include "gguf/gguf.h"

/* y (T, OC) = x (T, C) @ W^T, W (OC, C) of `type`. C must be a multiple of the type's
 * block. y must not alias x. */
void matmul(threadpool *pool, float *y, const float *x, int T, const void *w,
            enum tensor_type type, int OC, int C);

/* A weight matrix rearranged for the fastest kernel (quant_simd.h: 8 rows
 * interleaved, AVX2), made once when a model loads. It keeps a pointer to
 * the original so products still work if the SIMD level is lowered later (tests). */
typedef struct packed_matrix packed_matrix;

/* NULL when no packed kernel applies (no AVX2, type, or OC not a multiple of 8): the
 * caller then uses matmul() on the original. w must outlive the result. */
packed_matrix *matmul_pack(const void *w, enum tensor_type type, int OC, int C);
void packed_matrix_free(packed_matrix *p);
size_t packed_matrix_bytes(const packed_matrix *p);

/* matmul() with a packed matrix; the same results up to float summation order. */
void matmul_packed(threadpool *pool, float *y, const float *x, int T, const packed_matrix *p);

#endif
