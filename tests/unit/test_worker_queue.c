/* test_worker_queue.c - the worker's queue of waiting requests
 * (services/worker/job_queue.h):
 *   - jobs come out in arrival order, with their bytes intact, across ring wrap-around
 *     and growth;
 *   - a cancelled (removed) job is gone and the others keep their order;
 *   - empty or oversize ids and a full queue are refused without changing the queue.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "job_queue.h"

static void push(job_queue *q, int i)
{
    char id[32];
    snprintf(id, sizeof id, "req-%d", i);
    assert_int_equal(job_queue_push(q, id, &i, sizeof i), 0);
}

static int pop(job_queue *q)
{
    job j;
    assert_true(job_queue_pop(q, &j));
    int v;
    assert_int_equal(j.payload_len, sizeof v);
    memcpy(&v, j.payload, sizeof v);
    char id[32];
    snprintf(id, sizeof id, "req-%d", v);
    assert_string_equal(j.request_id, id);
    free(j.payload);
    return v;
}

static void test_fifo_across_wrap_and_growth(void **state)
{
    (void)state;
    job_queue q;
    job_queue_init(&q);
    int next_in = 0, next_out = 0;
    /* Interleave pushes and pops so the ring wraps, then grow it past its first size. */
    for (int round = 0; round < 20; round++) {
        for (int k = 0; k < 3 + round % 5; k++)
            push(&q, next_in++);
        for (int k = 0; k < 2; k++)
            assert_int_equal(pop(&q), next_out++);
    }
    while (job_queue_len(&q) > 0)
        assert_int_equal(pop(&q), next_out++);
    assert_int_equal(next_in, next_out);
    job j;
    assert_false(job_queue_pop(&q, &j));
    job_queue_free(&q);
}

static void test_remove_keeps_order(void **state)
{
    (void)state;
    job_queue q;
    job_queue_init(&q);
    for (int i = 0; i < 6; i++)
        push(&q, i);
    assert_int_equal(pop(&q), 0);  /* move head off slot 0 */
    assert_true(job_queue_contains(&q, "req-3"));
    assert_true(job_queue_remove(&q, "req-3"));
    assert_false(job_queue_contains(&q, "req-3"));
    assert_false(job_queue_remove(&q, "req-3"));
    assert_false(job_queue_remove(&q, "nope"));
    assert_int_equal(job_queue_len(&q), 4);
    int want[] = {1, 2, 4, 5};
    for (int i = 0; i < 4; i++)
        assert_int_equal(pop(&q), want[i]);
    job_queue_free(&q);
}

static void test_refusals(void **state)
{
    (void)state;
    job_queue q;
    job_queue_init(&q);
    char big[JOB_ID_MAX + 1];
    memset(big, 'x', JOB_ID_MAX);
    big[JOB_ID_MAX] = '\0';
    assert_int_equal(job_queue_push(&q, "", "x", 1), -1);
    assert_int_equal(job_queue_push(&q, big, "x", 1), -1);
    for (int i = 0; i < JOB_QUEUE_MAX; i++)
        push(&q, i);
    assert_int_equal(job_queue_push(&q, "one-more", "x", 1), -1);
    assert_int_equal(job_queue_len(&q), JOB_QUEUE_MAX);
    assert_int_equal(pop(&q), 0);
    job_queue_free(&q);  /* frees the remaining payloads: ASan checks */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fifo_across_wrap_and_growth),
        cmocka_unit_test(test_remove_keeps_order),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
