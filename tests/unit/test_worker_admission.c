/* test_worker_admission.c - the worker's door (services/worker/admission.h):
 *   - a prompt that leaves no room in the context is refused, naming both sizes;
 *   - requests that go straight into free batch slots never count as waiting, so a
 *     burst is judged as if it had arrived one by one;
 *   - beyond max_queued_requests waiting requests, or max_queued_tokens waiting prompt
 *     tokens, a request is refused as overloaded; exactly at the bound it is accepted;
 *   - max_queued_tokens 0 bounds nothing; the verdicts' metric labels.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "admission.h"

/* Queues a job of n_prompt tokens (no payload needed for accounting). */
static void queue_job(job_queue *q, int i, int n_prompt)
{
    job j = {0};
    snprintf(j.request_id, sizeof j.request_id, "req-%d", i);
    j.n_prompt = n_prompt;
    assert_int_equal(job_queue_push(q, &j), 0);
}

static void test_prompt_too_long(void **state)
{
    (void)state;
    job_queue q;
    job_queue_init(&q);
    admission_limits l = {.max_queued_requests = 4, .max_queued_tokens = 0, .n_ctx = 2048};
    char msg[256];
    assert_int_equal(admission_check(&l, &q, 8, 3000, msg, sizeof msg), ADMISSION_PROMPT_TOO_LONG);
    assert_non_null(strstr(msg, "prompt has 3000 tokens, the model's context is 2048"));
    /* Equal to the context: no room for one generated token. */
    assert_int_equal(admission_check(&l, &q, 8, 2048, msg, sizeof msg), ADMISSION_PROMPT_TOO_LONG);
    assert_int_equal(admission_check(&l, &q, 8, 2047, msg, sizeof msg), ADMISSION_ACCEPT);
    /* The context check comes first, even when the queue is full too. */
    l.max_queued_requests = 1;
    queue_job(&q, 0, 10);
    queue_job(&q, 1, 10);
    assert_int_equal(admission_check(&l, &q, 0, 5000, msg, sizeof msg), ADMISSION_PROMPT_TOO_LONG);
    job_queue_free(&q);
}

static void test_request_bound_counts_only_waiting(void **state)
{
    (void)state;
    job_queue q;
    job_queue_init(&q);
    admission_limits l = {.max_queued_requests = 2, .max_queued_tokens = 0, .n_ctx = 512};
    char msg[256];
    /* 3 free slots: the first 3 arrivals take them, then 2 may wait, the 6th may not. */
    for (int i = 0; i < 5; i++) {
        assert_int_equal(admission_check(&l, &q, 3, 10, msg, sizeof msg), ADMISSION_ACCEPT);
        queue_job(&q, i, 10);
    }
    assert_int_equal(admission_check(&l, &q, 3, 10, msg, sizeof msg), ADMISSION_QUEUE_REQUESTS);
    assert_non_null(strstr(msg, "2 requests already waiting (max_queued_requests 2)"));
    /* With no free slot at all, the same queue is 5 waiting: refused too. */
    assert_int_equal(admission_check(&l, &q, 0, 10, msg, sizeof msg), ADMISSION_QUEUE_REQUESTS);
    /* A slot frees for each of 4 of them: 1 waits, so one more may join. */
    assert_int_equal(admission_check(&l, &q, 4, 10, msg, sizeof msg), ADMISSION_ACCEPT);
    /* A negative free-slot count (more running than slots) reads as none. */
    assert_int_equal(admission_check(&l, &q, -3, 10, msg, sizeof msg), ADMISSION_QUEUE_REQUESTS);
    job_queue_free(&q);
}

static void test_token_bound(void **state)
{
    (void)state;
    job_queue q;
    job_queue_init(&q);
    admission_limits l = {.max_queued_requests = 100, .max_queued_tokens = 300, .n_ctx = 2048};
    char msg[256];
    /* 1 free slot: the 500-token job goes into it and is not counted as waiting. */
    queue_job(&q, 0, 500);
    queue_job(&q, 1, 100);
    queue_job(&q, 2, 100);
    /* Waiting: 100 + 100; a 100-token prompt makes exactly 300: accepted. */
    assert_int_equal(admission_check(&l, &q, 1, 100, msg, sizeof msg), ADMISSION_ACCEPT);
    assert_int_equal(admission_check(&l, &q, 1, 101, msg, sizeof msg), ADMISSION_QUEUE_TOKENS);
    assert_non_null(strstr(msg, "301 prompt tokens would be waiting (max_queued_tokens 300)"));
    /* Without the free slot, the 500 tokens wait too. */
    assert_int_equal(admission_check(&l, &q, 0, 1, msg, sizeof msg), ADMISSION_QUEUE_TOKENS);
    /* A request that goes straight into a free slot is never held to the token bound. */
    assert_int_equal(admission_check(&l, &q, 4, 1000, msg, sizeof msg), ADMISSION_ACCEPT);
    /* 0: no token bound. */
    l.max_queued_tokens = 0;
    assert_int_equal(admission_check(&l, &q, 0, 2000, msg, sizeof msg), ADMISSION_ACCEPT);
    job_queue_free(&q);
}

static void test_reasons(void **state)
{
    (void)state;
    assert_string_equal(admission_reason(ADMISSION_ACCEPT), "accepted");
    assert_string_equal(admission_reason(ADMISSION_PROMPT_TOO_LONG), "prompt_too_long");
    assert_string_equal(admission_reason(ADMISSION_QUEUE_REQUESTS), "queue_full_requests");
    assert_string_equal(admission_reason(ADMISSION_QUEUE_TOKENS), "queue_full_tokens");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prompt_too_long),
        cmocka_unit_test(test_request_bound_counts_only_waiting),
        cmocka_unit_test(test_token_bound),
        cmocka_unit_test(test_reasons),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
