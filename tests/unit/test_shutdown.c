/* test_shutdown.c - graceful stop (common/shutdown.h):
 *   - SIGTERM and SIGINT set the flag, name the signal and make shutdown_fd readable,
 *     so that a poll loop wakes; reset clears all three; shutdown_request does the same
 *     from code, from another thread;
 *   - a drain whose work finishes within the timeout returns 0 as soon as it does,
 *     and new work is refused from then on;
 *   - a drain whose work outlives the timeout returns the count left, after the
 *     timeout and not much later; a zero timeout only looks.
 */
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "shutdown.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Whether shutdown_fd is readable within ms milliseconds. */
static bool fd_readable(int ms)
{
    struct pollfd p = {shutdown_fd(), POLLIN, 0};
    return poll(&p, 1, ms) == 1 && (p.revents & POLLIN);
}

static void test_signals(void **state)
{
    (void)state;
    assert_int_equal(shutdown_install(), 0);
    assert_int_equal(shutdown_install(), 0);   /* idempotent */
    assert_true(shutdown_fd() >= 0);
    shutdown_reset();
    assert_false(shutdown_requested());
    assert_false(fd_readable(0));

    raise(SIGTERM);
    assert_true(shutdown_requested());
    assert_int_equal(shutdown_signal(), SIGTERM);
    assert_true(fd_readable(0));
    assert_true(fd_readable(0));   /* stays readable for every poller */

    shutdown_reset();
    assert_false(shutdown_requested());
    assert_int_equal(shutdown_signal(), 0);
    assert_false(fd_readable(0));

    raise(SIGINT);
    assert_true(shutdown_requested());
    assert_int_equal(shutdown_signal(), SIGINT);
    shutdown_reset();
}

static void *request_later(void *arg)
{
    (void)arg;
    usleep(50000);
    shutdown_request();
    return NULL;
}

static void test_request_wakes_poller(void **state)
{
    (void)state;
    assert_int_equal(shutdown_install(), 0);
    shutdown_reset();
    pthread_t th;
    pthread_create(&th, NULL, request_later, NULL);
    double t0 = now_s();
    assert_true(fd_readable(5000));
    assert_true(now_s() - t0 < 2.0);
    assert_true(shutdown_requested());
    assert_int_equal(shutdown_signal(), 0);
    pthread_join(th, NULL);
    shutdown_reset();
}

typedef struct job {
    shutdown_drain *d;
    int work_ms;
} job;

/* One piece of in-flight work: entered before the thread starts, left when done. */
static void *run_job(void *arg)
{
    job *j = arg;
    usleep((useconds_t)j->work_ms * 1000);
    shutdown_drain_leave(j->d);
    return NULL;
}

static void start_jobs(shutdown_drain *d, pthread_t *th, job *jobs, int n, int work_ms)
{
    for (int i = 0; i < n; i++) {
        jobs[i] = (job){d, work_ms};
        assert_true(shutdown_drain_enter(d));
        pthread_create(&th[i], NULL, run_job, &jobs[i]);
    }
}

static void test_drain_finishes(void **state)
{
    (void)state;
    shutdown_drain d;
    assert_int_equal(shutdown_drain_init(&d), 0);
    pthread_t th[4];
    job jobs[4];
    start_jobs(&d, th, jobs, 4, 150);
    assert_int_equal(shutdown_drain_in_flight(&d), 4);
    double t0 = now_s();
    assert_int_equal(shutdown_drain_wait(&d, 5.0), 0);
    double took = now_s() - t0;
    assert_true(took >= 0.1 && took < 2.0);   /* returned when the work ended, not at 5 s */
    assert_false(shutdown_drain_enter(&d));   /* refused for good */
    assert_int_equal(shutdown_drain_in_flight(&d), 0);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    shutdown_drain_destroy(&d);
}

static void test_drain_times_out(void **state)
{
    (void)state;
    shutdown_drain d;
    assert_int_equal(shutdown_drain_init(&d), 0);
    pthread_t th[3];
    job jobs[3];
    start_jobs(&d, th, jobs, 2, 1500);    /* too slow */
    start_jobs(&d, th + 2, jobs + 2, 1, 10);
    double t0 = now_s();
    assert_int_equal(shutdown_drain_wait(&d, 0.3), 2);
    double took = now_s() - t0;
    assert_true(took >= 0.29 && took < 1.2);
    assert_int_equal(shutdown_drain_wait(&d, 0), 2);   /* just looks */
    for (int i = 0; i < 3; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(shutdown_drain_wait(&d, 0), 0);
    shutdown_drain_destroy(&d);
}

static void test_drain_poll_loop_style(void **state)
{
    (void)state;
    shutdown_drain d;
    assert_int_equal(shutdown_drain_init(&d), 0);
    assert_true(shutdown_drain_enter(&d));
    shutdown_drain_stop_accepting(&d);
    assert_false(shutdown_drain_enter(&d));
    assert_int_equal(shutdown_drain_in_flight(&d), 1);
    shutdown_drain_leave(&d);
    shutdown_drain_leave(&d);   /* an extra leave never goes negative */
    assert_int_equal(shutdown_drain_in_flight(&d), 0);
    assert_int_equal(shutdown_drain_wait(&d, 0), 0);
    shutdown_drain_destroy(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_signals),
        cmocka_unit_test(test_request_wakes_poller),
        cmocka_unit_test(test_drain_finishes),
        cmocka_unit_test(test_drain_times_out),
        cmocka_unit_test(test_drain_poll_loop_style),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
