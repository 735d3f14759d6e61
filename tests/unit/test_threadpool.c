/* test_threadpool.c - unit tests for kernels/cpu/threadpool.c.
 *
 * The pool's one promise is that threadpool_run() runs every task exactly once, on a
 * thread whose index is in range, and returns only when all are done. These tests count
 * each task's runs with atomics across many job sizes and many back-to-back jobs (the
 * spin hand-off is where a lost or doubled job would show), with pools both smaller
 * and larger than the machine, and with the NULL pool that runs on the caller.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#include "cpu/threadpool.h"

enum { MAX_TASKS = 4096 };

/* What one job records: how often each task ran and whether any ran badly. */
typedef struct job_log {
    atomic_int runs[MAX_TASKS];
    atomic_int bad_thread;      /* tasks run with a thread index out of range */
    atomic_int bad_n_tasks;     /* tasks told a different n_tasks than was asked for */
    int n_threads;
    int n_tasks;
} job_log;

static void record_task(void *ctx, int task, int n_tasks, int thread)
{
    job_log *log = ctx;
    if (thread < 0 || thread >= log->n_threads)
        atomic_fetch_add(&log->bad_thread, 1);
    if (n_tasks != log->n_tasks)
        atomic_fetch_add(&log->bad_n_tasks, 1);
    if (task >= 0 && task < MAX_TASKS)
        atomic_fetch_add(&log->runs[task], 1);
}

/* Runs one job of n_tasks on pool and checks every task ran exactly once. */
static void run_and_check(threadpool *pool, job_log *log, int n_tasks)
{
    for (int t = 0; t < MAX_TASKS; t++)
        atomic_store(&log->runs[t], 0);
    atomic_store(&log->bad_thread, 0);
    atomic_store(&log->bad_n_tasks, 0);
    log->n_threads = threadpool_size(pool);
    log->n_tasks = n_tasks;
    threadpool_run(pool, record_task, log, n_tasks);
    for (int t = 0; t < MAX_TASKS; t++)
        assert_int_equal(atomic_load(&log->runs[t]), t < n_tasks ? 1 : 0);
    assert_int_equal(atomic_load(&log->bad_thread), 0);
    assert_int_equal(atomic_load(&log->bad_n_tasks), 0);
}

static const int job_sizes[] = {0, 1, 2, 3, 4, 5, 7, 8, 16, 31, 64, 100, 257, 1000, MAX_TASKS};

static void check_pool_of(int n_threads)
{
    threadpool *pool = threadpool_create(n_threads);
    assert_non_null(pool);
    assert_int_equal(threadpool_size(pool), n_threads);
    job_log *log = calloc(1, sizeof *log);
    assert_non_null(log);
    for (size_t i = 0; i < sizeof job_sizes / sizeof job_sizes[0]; i++)
        run_and_check(pool, log, job_sizes[i]);
    free(log);
    threadpool_free(pool);
}

static void test_single_thread_pool(void **state)
{
    (void)state;
    check_pool_of(1);
}

static void test_two_threads(void **state)
{
    (void)state;
    check_pool_of(2);
}

/* More threads than cores: helpers get descheduled mid-job, which the wait must survive. */
static void test_oversubscribed(void **state)
{
    (void)state;
    check_pool_of(7);
}

static void test_null_pool_runs_on_caller(void **state)
{
    (void)state;
    assert_int_equal(threadpool_size(NULL), 1);
    job_log *log = calloc(1, sizeof *log);
    assert_non_null(log);
    for (size_t i = 0; i < sizeof job_sizes / sizeof job_sizes[0]; i++)
        run_and_check(NULL, log, job_sizes[i]);
    free(log);
}

static void test_create_rejects_zero(void **state)
{
    (void)state;
    assert_null(threadpool_create(0));
    assert_null(threadpool_create(-3));
    threadpool_free(NULL);
}

/* Sums task numbers: the total is exact only if each of many short jobs is complete
 * when threadpool_run returns, which is the decode loop's use. */
static void add_task(void *ctx, int task, int n_tasks, int thread)
{
    (void)n_tasks;
    (void)thread;
    atomic_fetch_add((atomic_llong *)ctx, task + 1);
}

static void test_many_consecutive_jobs(void **state)
{
    (void)state;
    for (int n_threads = 2; n_threads <= 4; n_threads++) {
        threadpool *pool = threadpool_create(n_threads);
        assert_non_null(pool);
        for (int job = 0; job < 20000; job++) {
            int n = job % 37;
            atomic_llong sum = 0;
            threadpool_run(pool, add_task, &sum, n);
            assert_int_equal(atomic_load(&sum), (long long)n * (n + 1) / 2);
        }
        threadpool_free(pool);
    }
}

/* Helpers that have gone to sleep (after their spin) must still wake for the next job. */
static void test_jobs_after_idle(void **state)
{
    (void)state;
    threadpool *pool = threadpool_create(3);
    assert_non_null(pool);
    job_log *log = calloc(1, sizeof *log);
    assert_non_null(log);
    for (int round = 0; round < 3; round++) {
        struct timespec pause = {0, 30 * 1000 * 1000};
        nanosleep(&pause, NULL);
        run_and_check(pool, log, 100);
    }
    free(log);
    threadpool_free(pool);
}

/* Creating and freeing pools repeatedly must neither leak nor hang on join. */
static void test_create_free_cycles(void **state)
{
    (void)state;
    for (int i = 0; i < 50; i++) {
        threadpool *pool = threadpool_create(1 + i % 4);
        assert_non_null(pool);
        if (i % 2) {
            atomic_llong sum = 0;
            threadpool_run(pool, add_task, &sum, 10);
            assert_int_equal(atomic_load(&sum), 55);
        }
        threadpool_free(pool);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_single_thread_pool),
        cmocka_unit_test(test_two_threads),
        cmocka_unit_test(test_oversubscribed),
        cmocka_unit_test(test_null_pool_runs_on_caller),
        cmocka_unit_test(test_create_rejects_zero),
        cmocka_unit_test(test_many_consecutive_jobs),
        cmocka_unit_test(test_jobs_after_idle),
        cmocka_unit_test(test_create_free_cycles),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
