/* matmul.c - y = x W^T for the forward pass (see matmul.h): activation quantization,
 * the split of output channels across the thread pool, and the walk over tiles.
 *
 * For quantized weights the activations are quantized to q8a once per call; each task
 * then takes a run of output rows and, for every group of 4 rows, every group of up
 * to 4 tokens, calls the level's tile kernel (tile_kernels.h). The 4 rows' weights
 * stay in L1 while all T tokens pass over them, so in prefill each weight byte comes
 * from memory once per call however long the chunk; in decode (T = 1) the walk is a
 * plain stream over the weights, which is what bounds its speed.
 */
#include "cpu/matmul.h"

#include <stdlib.h>

#include "cpu/quant.h"
#include "cpu/quant_simd.h"
#include "cpu/simd.h"

enum { TILE_ROWS = 4, TILE_TOKENS = 4 };

typedef struct matmul_job {
    float *y;
    const float *x;
    const block_q8a *xq;    /* NULL for float weights */
    const char *w;
    size_t w_stride;        /* bytes per weight row */
    enum tensor_type type;
    int T, OC, C;
    int rows_per_task;
    gemm_tile_fn tile;      /* NULL: fall back to vec_dot per output */
} matmul_job;

static gemm_tile_fn tile_kernel(enum tensor_type type)
{
    switch (simd_level()) {
    case SIMD_AVX512: return gemm_tile_kernel_avx512(type);
    case SIMD_AVX2: return gemm_tile_kernel_avx2(type);
    default: return NULL;
    }
}

static void rows_by_tiles(const matmul_job *job, int r0, int r1)
{
    int nb = job->C / QK;
    size_t x_stride = (size_t)nb;
    for (int r = r0; r < r1; r += TILE_ROWS) {
        int rm = r1 - r < TILE_ROWS ? r1 - r : TILE_ROWS;
        for (int t = 0; t < job->T; t += TILE_TOKENS) {
            int rn = job->T - t < TILE_TOKENS ? job->T - t : TILE_TOKENS;
            job->tile(job->w + (size_t)r * job->w_stride, job->w_stride, job->xq + (size_t)t * nb,
                      x_stride, nb, job->y + (size_t)t * job->OC + r, (size_t)job->OC, rm, rn);
        }
    }
}

static void rows_by_dots(const matmul_job *job, int r0, int r1)
{
    int nb = job->C / QK;
    for (int t = 0; t < job->T; t++) {
        const float *xt = job->x + (size_t)t * job->C;
        const block_q8a *xqt = job->xq ? job->xq + (size_t)t * nb : NULL;
        for (int r = r0; r < r1; r++)
            job->y[(size_t)t * job->OC + r] =
                vec_dot(job->type, job->w + (size_t)r * job->w_stride, xt, xqt, job->C);
    }
}

static void matmul_task(void *ctx, int task, int n_tasks, int thread)
{
    (void)n_tasks;
    (void)thread;
    const matmul_job *job = ctx;
    int r0 = task * job->rows_per_task;
    int r1 = r0 + job->rows_per_task < job->OC ? r0 + job->rows_per_task : job->OC;
    if (job->tile)
        rows_by_tiles(job, r0, r1);
    else
        rows_by_dots(job, r0, r1);
}

/* Enough tasks that the atomic hand-out balances threads that run at different
 * speeds, few enough that each still streams a useful run of rows; a multiple of the
 * tile height so only the last task has a partial tile. */
static int rows_per_task(int OC, int n_threads)
{
    int target_tasks = n_threads * 16;
    int rows = (OC + target_tasks - 1) / target_tasks;
    if (rows < 16) rows = 16;
    return (rows + TILE_ROWS - 1) / TILE_ROWS * TILE_ROWS;
}

/* The q8a copy of x lives in a per-thread buffer that only grows: matmul runs hundreds
 * of times per token and a malloc per call would show. */
static _Thread_local block_q8a *q8a_buffer;
static _Thread_local size_t q8a_capacity;

static block_q8a *q8a_scratch(size_t n_blocks)
{
    if (n_blocks > q8a_capacity) {
        free(q8a_buffer);
        q8a_buffer = malloc(n_blocks * sizeof *q8a_buffer);
        q8a_capacity = q8a_buffer ? n_blocks : 0;
    }
    return q8a_buffer;
}

void matmul(threadpool *pool, float *y, const float *x, int T, const void *w,
            enum tensor_type type, int OC, int C)
{
    matmul_job job = {
        .y = y, .x = x, .w = w, .type = type, .T = T, .OC = OC, .C = C,
        .w_stride = tensor_row_bytes(type, C),
        .rows_per_task = rows_per_task(OC, threadpool_size(pool)),
    };
    if (type_uses_q8a(type)) {
        size_t nb = (size_t)C / QK;
        block_q8a *xq = q8a_scratch((size_t)T * nb);
        if (xq == NULL)
            abort();  /* a few KB per token: failing here means the process is lost anyway */
        for (int t = 0; t < T; t++)
            quantize_row_q8a(x + (size_t)t * C, xq + (size_t)t * nb, C);
        job.xq = xq;
        job.tile = tile_kernel(type);
    }
    int n_tasks = (OC + job.rows_per_task - 1) / job.rows_per_task;
    threadpool_run(pool, matmul_task, &job, n_tasks);
}
