/* threadpool.h - a persistent pool of worker threads for the engine's parallel loops.
 *
 * Threads are created once and sleep between jobs (no thread per call): a forward pass
 * issues a few hundred parallel loops per token, so start-up cost must be near zero.
 * A job is "run fn(ctx, task, n_tasks, thread) for task in [0, n_tasks)"; the calling
 * thread takes part, so a pool of n threads starts n-1 helpers. Tasks are handed out
 * with an atomic counter, so uneven tasks balance themselves.
 */
#ifndef CITADEL_THREADPOOL_H
#define CITADEL_THREADPOOL_H

typedef struct threadpool threadpool;

/* `thread` is the index (0..n_threads-1) of the thread running the task: use it to pick
 * per-thread scratch memory. */
typedef void (*threadpool_task_fn)(void *ctx, int task, int n_tasks, int thread);

/* A pool of n_threads (>= 1; the caller counts as one). NULL on failure. */
threadpool *threadpool_create(int n_threads);
void threadpool_free(threadpool *pool);
int threadpool_size(const threadpool *pool);

/* Runs every task and returns when all are done. Not reentrant: one job at a time per
 * pool. A NULL pool runs the tasks on the caller. */
void threadpool_run(threadpool *pool, threadpool_task_fn fn, void *ctx, int n_tasks);

#endif
