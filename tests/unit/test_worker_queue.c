/* test_worker_queue.c - the worker's queue of waiting requests
 * (services/worker/job_queue.h):
 *   - jobs come out in arrival order, with their bytes intact, across ring wrap-around
 *     and growth;
 *   - a cancelled (removed) job is gone and the others keep their order;
 *   - empty or oversize ids and a full queue are refused without changing the queue;
 *   - the prompt-token count follows every push, pop, removal and expiry, and
 *     tokens_after skips the jobs bound for free slots;
 *   - expired jobs come out oldest first, jobs without a deadline never expire.
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

/* A job named req-<i> whose payload is i and whose prompt is i % 7 + 1 tokens. */
static job make(int i)
{
    job j = {0};
    snprintf(j.request_id, sizeof j.request_id, "req-%d", i);
    j.payload = malloc(sizeof i);
    memcpy(j.payload, &i, sizeof i);
    j.payload_len = sizeof i;
    j.n_prompt = i % 7 + 1;
    j.prompt_ids = calloc((size_t)j.n_prompt, sizeof *j.prompt_ids);
    return j;
}

static void push(job_queue *q, int i)
{
    job j = make(i);
    assert_int_equal(job_queue_push(q, &j), 0);
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
    assert_int_equal(j.n_prompt, v % 7 + 1);
    job_free(&j);
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
    job j = make(0);
    j.request_id[0] = '\0';
    assert_int_equal(job_queue_push(&q, &j), -1);
    memcpy(j.request_id, big, JOB_ID_MAX);   /* no NUL: too long */
    assert_int_equal(job_queue_push(&q, &j), -1);
    assert_int_equal(job_queue_len(&q), 0);
    assert_int_equal(job_queue_tokens(&q), 0);
    for (int i = 0; i < JOB_QUEUE_MAX; i++)
        push(&q, i);
    snprintf(j.request_id, sizeof j.request_id, "one-more");
    long long tokens = job_queue_tokens(&q);
    assert_int_equal(job_queue_push(&q, &j), -1);
    assert_int_equal(job_queue_len(&q), JOB_QUEUE_MAX);
    assert_int_equal(job_queue_tokens(&q), tokens);
    job_free(&j);   /* refused: still the caller's */
    assert_int_equal(pop(&q), 0);
    job_queue_free(&q);  /* frees the remaining payloads: ASan checks */
}

static void test_token_accounting(void **state)
{
    (void)state;
    job_queue q;
    job_queue_init(&q);
    long long sum = 0;
    for (int i = 0; i < 10; i++) {
        push(&q, i);
        sum += i % 7 + 1;
        assert_int_equal(job_queue_tokens(&q), sum);
    }
    /* tokens_after(k): the jobs from the k-th on. */
    assert_int_equal(job_queue_tokens_after(&q, 0), sum);
    assert_int_equal(job_queue_tokens_after(&q, 3), sum - (1 + 2 + 3));
    assert_int_equal(job_queue_tokens_after(&q, 10), 0);
    assert_int_equal(job_queue_tokens_after(&q, 99), 0);
    assert_int_equal(job_queue_tokens_after(&q, -1), sum);
    assert_int_equal(pop(&q), 0);
    sum -= 1;
    assert_int_equal(job_queue_tokens(&q), sum);
    assert_true(job_queue_remove(&q, "req-5"));
    sum -= 5 % 7 + 1;
    assert_int_equal(job_queue_tokens(&q), sum);
    while (job_queue_len(&q) > 0)
        pop(&q);
    assert_int_equal(job_queue_tokens(&q), 0);
    job_queue_free(&q);
}

static void test_expiry(void **state)
{
    (void)state;
    job_queue q;
    job_queue_init(&q);
    /* Deadlines: req-0 none, req-1 at 500, req-2 none, req-3 at 200, req-4 at 900. */
    int64_t deadlines[] = {0, 500, 0, 200, 900};
    for (int i = 0; i < 5; i++) {
        job j = make(i);
        j.deadline_unix_ms = deadlines[i];
        assert_int_equal(job_queue_push(&q, &j), 0);
    }
    job j;
    assert_false(job_queue_pop_expired(&q, 199, &j));
    assert_int_equal(job_queue_len(&q), 5);
    /* At 600, req-1 and req-3 have expired: the older first. */
    assert_true(job_queue_pop_expired(&q, 600, &j));
    assert_string_equal(j.request_id, "req-1");
    job_free(&j);
    assert_true(job_queue_pop_expired(&q, 600, &j));
    assert_string_equal(j.request_id, "req-3");
    job_free(&j);
    assert_false(job_queue_pop_expired(&q, 600, &j));
    assert_int_equal(job_queue_tokens(&q), (0 + 1) + (2 + 1) + (4 + 1));
    /* A deadline equal to now has passed; jobs without one never expire. */
    assert_true(job_queue_pop_expired(&q, 900, &j));
    assert_string_equal(j.request_id, "req-4");
    job_free(&j);
    assert_false(job_queue_pop_expired(&q, INT64_MAX, &j));
    assert_int_equal(pop(&q), 0);
    assert_int_equal(pop(&q), 2);
    job_queue_free(&q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fifo_across_wrap_and_growth),
        cmocka_unit_test(test_remove_keeps_order),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_token_accounting),
        cmocka_unit_test(test_expiry),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
