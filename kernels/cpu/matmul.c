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

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/matmul_simd.h"
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
    int float_tiles;        /* F32/F16/BF16 weights through float_tile_avx2 */
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

static void rows_by_float_tiles(const matmul_job *job, int r0, int r1)
{
    for (int r = r0; r < r1; r += TILE_ROWS) {
        int rm = r1 - r < TILE_ROWS ? r1 - r : TILE_ROWS;
        for (int t = 0; t < job->T; t += TILE_TOKENS) {
            int rn = job->T - t < TILE_TOKENS ? job->T - t : TILE_TOKENS;
            float_tile_avx2(job->type, job->w + (size_t)r * job->w_stride, job->w_stride,
                            job->x + (size_t)t * job->C, (size_t)job->C, job->C,
                            job->y + (size_t)t * job->OC + r, (size_t)job->OC, rm, rn);
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
    else if (job->float_tiles)
        rows_by_float_tiles(job, r0, r1);
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
 * of times per token and a malloc per call would show. A thread-specific key frees it
 * when its thread exits (threads that are not the pool's also call matmul: the ranks
 * of a tensor-parallel group run as threads in tests). */
static _Thread_local block_q8a *q8a_buffer;
static _Thread_local size_t q8a_capacity;
static pthread_key_t q8a_key;
static pthread_once_t q8a_key_once = PTHREAD_ONCE_INIT;

static void q8a_make_key(void) { pthread_key_create(&q8a_key, free); }

static block_q8a *q8a_scratch(size_t n_blocks)
{
    if (n_blocks > q8a_capacity) {
        free(q8a_buffer);
        q8a_buffer = malloc(n_blocks * sizeof *q8a_buffer);
        q8a_capacity = q8a_buffer ? n_blocks : 0;
        pthread_once(&q8a_key_once, q8a_make_key);
        pthread_setspecific(q8a_key, q8a_buffer);
    }
    return q8a_buffer;
}

typedef struct quantize_job {
    const float *x;
    block_q8a *xq;
    int C;
} quantize_job;

static void quantize_task(void *ctx, int task, int n_tasks, int thread)
{
    (void)n_tasks;
    (void)thread;
    const quantize_job *job = ctx;
    size_t nb = (size_t)job->C / QK;
    quantize_row_q8a(job->x + (size_t)task * job->C, job->xq + (size_t)task * nb, job->C);
}

/* Quantizes the T rows of x into the calling thread's scratch; a prompt chunk's rows
 * in parallel, since on the caller alone they would leave the pool idle. */
static const block_q8a *quantize_activations(threadpool *pool, const float *x, int T, int C)
{
    size_t nb = (size_t)C / QK;
    block_q8a *xq = q8a_scratch((size_t)T * nb);
    if (xq == NULL)
        abort();  /* a few KB per token: failing here means the process is lost anyway */
    quantize_job job = {x, xq, C};
    threadpool_run(T >= 4 ? pool : NULL, quantize_task, &job, T);
    return xq;
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
        job.xq = quantize_activations(pool, x, T, C);
        job.tile = tile_kernel(type);
    } else {
        job.float_tiles = simd_level() >= SIMD_AVX2 && C % 8 == 0 &&
                          (type == TENSOR_F32 || type == TENSOR_F16 || type == TENSOR_BF16);
    }
    int n_tasks = (OC + job.rows_per_task - 1) / job.rows_per_task;
    threadpool_run(pool, matmul_task, &job, n_tasks);
}

/* ---- packed matrices ---------------------------------------------------------------- */

struct packed_matrix {
    const void *original;
    enum tensor_type type;
    int OC, C;
    void *data;         /* OC/8 groups of C/32 packed blocks */
    size_t bytes;
};

static uint16_t half_of(float f) { return fp32_to_fp16(f); }

/* Row i of the group, block b, as its raw block. */
static const void *raw_block(const packed_matrix *p, int row, int b)
{
    size_t row_bytes = tensor_row_bytes(p->type, p->C);
    const struct tensor_type_info *info = tensor_type_info(p->type);
    return (const char *)p->original + (size_t)row * row_bytes + (size_t)b * info->block_bytes;
}

static void pack_q8_group(const packed_matrix *p, int g, packed_q8x8 *out, int nb)
{
    for (int b = 0; b < nb; b++)
        for (int i = 0; i < PACK_ROWS; i++) {
            const block_q8_0 *blk = raw_block(p, g * PACK_ROWS + i, b);
            out[b].d[i] = blk->d;
            out[b].c[i] = 0;
            for (int k = 0; k < QK / 4; k++)
                memcpy(&out[b].q[32 * k + 4 * i], blk->qs + 4 * k, 4);
        }
}

static void pack_q4_group(const packed_matrix *p, int g, packed_q4x8 *out, int nb)
{
    for (int b = 0; b < nb; b++)
        for (int i = 0; i < PACK_ROWS; i++) {
            const uint8_t *qs;
            if (p->type == TENSOR_Q4_0) {
                const block_q4_0 *blk = raw_block(p, g * PACK_ROWS + i, b);
                out[b].d[i] = blk->d;
                out[b].c[i] = half_of(-8.0f * fp16_to_fp32(blk->d));
                qs = blk->qs;
            } else {
                const block_q4_1 *blk = raw_block(p, g * PACK_ROWS + i, b);
                out[b].d[i] = blk->d;
                out[b].c[i] = blk->m;
                qs = blk->qs;
            }
            for (int k = 0; k < QK / 8; k++)
                memcpy(&out[b].q[32 * k + 4 * i], qs + 4 * k, 4);
        }
}

packed_matrix *matmul_pack(const void *w, enum tensor_type type, int OC, int C)
{
    if (simd_level() < SIMD_AVX2 || OC % PACK_ROWS != 0 || C % QK != 0 ||
        (type != TENSOR_Q8_0 && type != TENSOR_Q4_0 && type != TENSOR_Q4_1))
        return NULL;
    packed_matrix *p = calloc(1, sizeof *p);
    if (p == NULL)
        return NULL;
    int nb = C / QK, groups = OC / PACK_ROWS;
    size_t block = type == TENSOR_Q8_0 ? sizeof(packed_q8x8) : sizeof(packed_q4x8);
    *p = (packed_matrix){.original = w, .type = type, .OC = OC, .C = C,
                         .bytes = block * (size_t)nb * groups};
    p->data = aligned_alloc(64, (p->bytes + 63) / 64 * 64);
    if (p->data == NULL) {
        free(p);
        return NULL;
    }
    for (int g = 0; g < groups; g++) {
        char *out = (char *)p->data + (size_t)g * nb * block;
        if (type == TENSOR_Q8_0)
            pack_q8_group(p, g, (packed_q8x8 *)out, nb);
        else
            pack_q4_group(p, g, (packed_q4x8 *)out, nb);
    }
    return p;
}

void packed_matrix_free(packed_matrix *p)
{
    if (p == NULL)
        return;
    free(p->data);
    free(p);
}

size_t packed_matrix_bytes(const packed_matrix *p) { return p ? p->bytes : 0; }

typedef struct packed_job {
    const packed_matrix *p;
    const block_q8a *xq;
    float *y;
    int T, groups_per_task;
} packed_job;

static void packed_task(void *ctx, int task, int n_tasks, int thread)
{
    (void)n_tasks;
    (void)thread;
    const packed_job *job = ctx;
    int groups = job->p->OC / PACK_ROWS;
    int g0 = task * job->groups_per_task;
    int g1 = g0 + job->groups_per_task < groups ? g0 + job->groups_per_task : groups;
    packed_gemm_avx2(job->p->type, job->p->data, g0, g1, job->p->C / QK, job->xq, job->T, job->y,
                       (size_t)job->p->OC);
}

void matmul_packed(threadpool *pool, float *y, const float *x, int T, const packed_matrix *p)
{
    if (simd_level() < SIMD_AVX2) {
        matmul(pool, y, x, T, p->original, p->type, p->OC, p->C);
        return;
    }
    int groups = p->OC / PACK_ROWS;
    int per_task = rows_per_task(p->OC, threadpool_size(pool)) / PACK_ROWS;
    per_task = per_task < 1 ? 1 : per_task;
    packed_job job = {.p = p, .xq = quantize_activations(pool, x, T, p->C), .y = y, .T = T,
                      .groups_per_task = per_task};
    threadpool_run(pool, packed_task, &job, (groups + per_task - 1) / per_task);
}
