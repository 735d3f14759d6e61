/* threadpool.c - the persistent worker pool behind every parallel loop of the engine
 * (see threadpool.h).
 *
 * A job is published by bumping `generation`; helpers that see a new generation grab
 * task numbers from `next_task` until none are left, then count themselves out in
 * `n_busy`. Helpers spin, then sleep on a condition variable; the caller spins until
 * they are done. A decode step runs a few hundred jobs of a few microseconds each, so a
 * futex round trip per job would cost more than the work, while a pool idle between
 * requests must not burn a core.
 */
#include "cpu/threadpool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#else
#define cpu_relax() ((void)0)
#endif

/* About half a millisecond of pause instructions before a helper sleeps: longer than the
 * gap between the jobs of one forward pass. Every YIELD_EVERY rounds a spinner offers
 * its core, so a pool with more threads than free cores still makes progress. */
enum { SPIN_ROUNDS = 20000, YIELD_EVERY = 128 };

/* One round of a spin-wait. */
static inline void spin_pause(int round)
{
    if (round % YIELD_EVERY == YIELD_EVERY - 1)
        sched_yield();
    else
        cpu_relax();
}

struct threadpool {
    int n_threads;
    pthread_t *threads;
    /* the current job, valid while n_busy > 0 */
    threadpool_task_fn fn;
    void *ctx;
    int n_tasks;
    atomic_int next_task;
    atomic_int n_busy;          /* helpers still inside the current job */
    atomic_uint generation;     /* bumped once per job; helpers wait for a change */
    atomic_bool stop;
    pthread_mutex_t lock;       /* with `wake`: where idle helpers sleep */
    pthread_cond_t wake;
    atomic_int n_sleeping;
};

typedef struct helper_arg {
    threadpool *pool;
    int index;
} helper_arg;

static void run_tasks(threadpool *pool, int thread)
{
    for (;;) {
        int task = atomic_fetch_add_explicit(&pool->next_task, 1, memory_order_relaxed);
        if (task >= pool->n_tasks)
            return;
        pool->fn(pool->ctx, task, pool->n_tasks, thread);
    }
}

/* Returns the new generation, or seen if the pool is stopping. */
static unsigned wait_for_job(threadpool *pool, unsigned seen)
{
    for (int i = 0; i < SPIN_ROUNDS; i++) {
        unsigned g = atomic_load_explicit(&pool->generation, memory_order_acquire);
        if (g != seen || atomic_load(&pool->stop))
            return g;
        spin_pause(i);
    }
    pthread_mutex_lock(&pool->lock);
    atomic_fetch_add(&pool->n_sleeping, 1);
    unsigned g;
    while ((g = atomic_load(&pool->generation)) == seen && !atomic_load(&pool->stop))
        pthread_cond_wait(&pool->wake, &pool->lock);
    atomic_fetch_sub(&pool->n_sleeping, 1);
    pthread_mutex_unlock(&pool->lock);
    return g;
}

static void *helper_main(void *p)
{
    helper_arg arg = *(helper_arg *)p;
    free(p);
    threadpool *pool = arg.pool;
    unsigned seen = 0;
    for (;;) {
        seen = wait_for_job(pool, seen);
        if (atomic_load(&pool->stop))
            return NULL;
        run_tasks(pool, arg.index);
        atomic_fetch_sub_explicit(&pool->n_busy, 1, memory_order_release);
    }
}

/* The caller spins (and yields now and then): in a balanced job the helpers finish
 * within microseconds of it, and one that was descheduled needs the core back. */
static void wait_for_helpers(threadpool *pool)
{
    for (int i = 0; atomic_load_explicit(&pool->n_busy, memory_order_acquire) > 0;
         i = (i + 1) % YIELD_EVERY)
        spin_pause(i);
}

threadpool *threadpool_create(int n_threads)
{
    if (n_threads < 1)
        return NULL;
    threadpool *pool = calloc(1, sizeof *pool);
    if (pool == NULL)
        return NULL;
    pool->n_threads = n_threads;
    pthread_mutex_init(&pool->lock, NULL);
    pthread_cond_init(&pool->wake, NULL);
    pool->threads = calloc((size_t)n_threads, sizeof *pool->threads);
    if (pool->threads == NULL) {
        free(pool);
        return NULL;
    }
    for (int i = 1; i < n_threads; i++) {
        helper_arg *arg = malloc(sizeof *arg);
        if (arg == NULL || pthread_create(&pool->threads[i], NULL, helper_main,
                                          (*arg = (helper_arg){pool, i}, arg)) != 0) {
            free(arg);
            pool->n_threads = i;  /* free() joins the ones that started */
            threadpool_free(pool);
            return NULL;
        }
    }
    return pool;
}

void threadpool_free(threadpool *pool)
{
    if (pool == NULL)
        return;
    pthread_mutex_lock(&pool->lock);
    atomic_store(&pool->stop, true);
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->lock);
    for (int i = 1; i < pool->n_threads; i++)
        pthread_join(pool->threads[i], NULL);
    pthread_mutex_destroy(&pool->lock);
    pthread_cond_destroy(&pool->wake);
    free(pool->threads);
    free(pool);
}

int threadpool_size(const threadpool *pool) { return pool ? pool->n_threads : 1; }

void threadpool_run(threadpool *pool, threadpool_task_fn fn, void *ctx, int n_tasks)
{
    if (n_tasks <= 0)
        return;
    if (pool == NULL || pool->n_threads == 1 || n_tasks == 1) {
        for (int t = 0; t < n_tasks; t++)
            fn(ctx, t, n_tasks, 0);
        return;
    }
    pool->fn = fn;
    pool->ctx = ctx;
    pool->n_tasks = n_tasks;
    atomic_store_explicit(&pool->next_task, 0, memory_order_relaxed);
    atomic_store_explicit(&pool->n_busy, pool->n_threads - 1, memory_order_relaxed);
    atomic_fetch_add(&pool->generation, 1);  /* seq_cst: pairs with n_sleeping */
    if (atomic_load(&pool->n_sleeping) > 0) {
        pthread_mutex_lock(&pool->lock);
        pthread_cond_broadcast(&pool->wake);
        pthread_mutex_unlock(&pool->lock);
    }
    run_tasks(pool, 0);
    wait_for_helpers(pool);
}
