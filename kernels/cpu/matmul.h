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

#endif
