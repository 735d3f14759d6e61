/* bench_matmul.c - the matrix products alone, on the shapes of the reference models:
 * decode (T = 1, bound by how fast the weights stream from memory: GB/s) and prefill
 * (T = 128, bound by arithmetic: GFLOP/s), plain and packed, median of 7 runs.
 *
 * "decode" repeats one matrix, which then sits in the caches when it is small; "cold"
 * cycles through enough copies to overflow them (a model's forward pass reads each
 * matrix once per token, from memory), next to a plain read of the same bytes over
 * the same pool as the bound to compare with.
 *
 *   build/bench/bench_matmul [threads] [type]     (make bench runs it with 2, all types)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "cpu/matmul.h"
#include "cpu/quant.h"

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static int by_value(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median seconds per call over 7 runs of `reps` calls. */
static double time_calls(threadpool *pool, float *y, const float *x, int T, const void *w,
                         const packed_matrix *p, enum tensor_type type, int OC, int C)
{
    int reps = T == 1 ? 200 : 10;
    double runs[7];
    for (int r = 0; r < 7; r++) {
        double t0 = now();
        for (int i = 0; i < reps; i++) {
            if (p) matmul_packed(pool, y, x, T, p);
            else matmul(pool, y, x, T, w, type, OC, C);
        }
        runs[r] = (now() - t0) / reps;
    }
    qsort(runs, 7, sizeof runs[0], by_value);
    return runs[3];
}

/* Enough distinct bytes to fall out of any L3 this runs on. */
enum { COLD_BYTES = 256 << 20 };

/* Seconds per decode call over n copies of w (`bytes` each, packed where packs is not
 * NULL) taken in turn. */
static double time_cold(threadpool *pool, float *y, const float *x, const char *copies,
                        packed_matrix **packs, int n, size_t bytes, enum tensor_type type,
                        int OC, int C)
{
    double runs[3];
    for (int r = 0; r < 3; r++) {
        double t0 = now();
        for (int i = 0; i < n * 2; i++) {
            if (packs) matmul_packed(pool, y, x, 1, packs[i % n]);
            else matmul(pool, y, x, 1, copies + (size_t)(i % n) * bytes, type, OC, C);
        }
        runs[r] = (now() - t0) / (n * 2);
    }
    qsort(runs, 3, sizeof runs[0], by_value);
    return runs[1];
}

typedef struct read_job {
    const char *p;
    size_t bytes;
    long long sink[64];
} read_job;

/* Sums a share of the buffer as 32-bit lanes: the reading half of memcpy, vectorized. */
static void read_task(void *ctx, int task, int n_tasks, int thread)
{
    (void)thread;
    read_job *job = ctx;
    size_t share = job->bytes / n_tasks / 64 * 64;
    const unsigned *p = (const unsigned *)(job->p + (size_t)task * share);
    unsigned s[16] = {0};
    for (size_t i = 0; i < share / 4; i += 16)
        for (int k = 0; k < 16; k++) s[k] += p[i + k];
    for (int k = 1; k < 16; k++) s[0] += s[k];
    job->sink[task % 64] += s[0];
}

/* GB/s of a plain parallel read of `bytes` (the decode bound). */
static double read_bandwidth(threadpool *pool, const char *p, size_t bytes)
{
    read_job job = {.p = p, .bytes = bytes};
    double best = 1e9;
    for (int r = 0; r < 5; r++) {
        double t0 = now();
        threadpool_run(pool, read_task, &job, 2 * threadpool_size(pool));
        double dt = now() - t0;
        best = dt < best ? dt : best;
    }
    return bytes / best / 1e9;
}

static void bench_shape(threadpool *pool, enum tensor_type type, int OC, int C)
{
    size_t row = tensor_row_bytes(type, C);
    char *w = malloc(row * OC);
    float *wf = malloc(sizeof(float) * C), *x = malloc(sizeof(float) * 128 * C);
    float *y = malloc(sizeof(float) * 128 * (size_t)OC);
    for (int o = 0; o < OC; o++) {
        for (int i = 0; i < C; i++)
            wf[i] = (float)rand() / RAND_MAX - 0.5f;
        quantize_row(type, wf, w + o * row, C);
    }
    for (int i = 0; i < 128 * C; i++)
        x[i] = (float)rand() / RAND_MAX - 0.5f;
    size_t bytes = row * OC;
    int n_copies = (int)(COLD_BYTES / bytes) + 1;
    char *copies = malloc(bytes * n_copies);
    for (int i = 0; copies && i < n_copies; i++)
        memcpy(copies + (size_t)i * bytes, w, bytes);
    if (copies) {
        packed_matrix **packs = calloc(n_copies, sizeof *packs);
        for (int i = 0; packs && i < n_copies; i++)
            packs[i] = matmul_pack(copies + (size_t)i * bytes, type, OC, C);
        if (packs && packs[0] == NULL) {
            free(packs);
            packs = NULL;
        }
        double cold = time_cold(pool, y, x, copies, packs, n_copies, bytes, type, OC, C);
        printf("%-5s %-6s %6d x %-5d  cold decode %6.1f us %6.1f GB/s   (plain read of %d MiB: %.1f GB/s)\n",
               tensor_type_info(type)->name, packs ? "packed" : "plain", OC, C, cold * 1e6,
               bytes / cold / 1e9, (int)((bytes * n_copies) >> 20),
               read_bandwidth(pool, copies, bytes * n_copies));
        for (int i = 0; packs && i < n_copies; i++)
            packed_matrix_free(packs[i]);
        free(packs);
        free(copies);
    }
    packed_matrix *p = matmul_pack(w, type, OC, C);
    for (int packed = 0; packed <= (p != NULL); packed++) {
        double dec = time_calls(pool, y, x, 1, w, packed ? p : NULL, type, OC, C);
        double pre = time_calls(pool, y, x, 128, w, packed ? p : NULL, type, OC, C);
        printf("%-5s %-6s %6d x %-5d  decode %8.1f us %6.1f GB/s   prefill(128) %8.1f us %6.1f GFLOP/s\n",
               tensor_type_info(type)->name, packed ? "packed" : "plain", OC, C, dec * 1e6,
               row * OC / dec / 1e9, pre * 1e6, 2.0 * OC * C * 128 / pre / 1e9);
    }
    packed_matrix_free(p);
    free(w);
    free(wf);
    free(x);
    free(y);
}

int main(int argc, char **argv)
{
    int threads = argc > 1 ? atoi(argv[1]) : 2;
    const char *only = argc > 2 ? argv[2] : NULL;
    threadpool *pool = threadpool_create(threads > 0 ? threads : 1);
    const int shapes[][2] = {{576, 576}, {1536, 576}, {576, 1536}, {49152, 576}, {2048, 2048}, {5632, 2048}};
    const enum tensor_type types[] = {TENSOR_Q8_0, TENSOR_Q4_0, TENSOR_Q4_1, TENSOR_Q4_K, TENSOR_Q6_K, TENSOR_F16};
    printf("threads=%d\n", threadpool_size(pool));
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++)
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            if (only && strcasecmp(only, tensor_type_info(types[t])->name) != 0)
                continue;
            if (types[t] != TENSOR_Q8_0 && types[t] != TENSOR_Q4_0 && shapes[s][0] == 49152)
                continue;  /* the output matrix only in the two reference types */
            bench_shape(pool, types[t], shapes[s][0], shapes[s][1]);
        }
    threadpool_free(pool);
    return 0;
}
