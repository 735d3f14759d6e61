/* test_router_pending.c - the router's requests in flight (services/router/pending.h):
 *   - a request is added once (duplicates, empty ids and oversize identities refused),
 *     found by id and removed;
 *   - each assignment is an attempt; a request retries only before its first chunk,
 *     while not cancelled and within PENDING_MAX_ATTEMPTS, and never goes back to a
 *     worker that already had it;
 *   - the requests of a dead worker are listed, and only those.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "pending.h"

static pending_request *add(pending_table *t, const char *id)
{
    pending_request *p;
    assert_int_equal(pending_add(t, id, "smol", "gw", 2, "bytes", 5, 1.0, &p), PENDING_ADDED);
    return p;
}

static void test_add_find_remove(void **state)
{
    (void)state;
    pending_table t;
    pending_init(&t);
    pending_request *p = add(&t, "r1"), *q;
    assert_memory_equal(p->payload, "bytes", 5);
    assert_int_equal(p->payload_len, 5);
    assert_int_equal(pending_add(&t, "r1", "smol", "gw", 2, "x", 1, 1.0, &q), PENDING_DUPLICATE);
    assert_int_equal(pending_add(&t, "", "smol", "gw", 2, "x", 1, 1.0, &q), PENDING_BAD);
    assert_int_equal(pending_add(&t, "r2", "", "gw", 2, "x", 1, 1.0, &q), PENDING_BAD);
    char big[PENDING_ID_MAX + 1] = {0};
    assert_int_equal(pending_add(&t, "r2", "smol", big, sizeof big, "x", 1, 1.0, &q), PENDING_BAD);
    add(&t, "r2");
    add(&t, "r3");
    assert_ptr_equal(pending_find(&t, "r1"), p);
    pending_remove(&t, p);
    assert_null(pending_find(&t, "r1"));
    assert_non_null(pending_find(&t, "r2"));
    assert_non_null(pending_find(&t, "r3"));
    assert_int_equal(t.n, 2);
    pending_free(&t);
}

static void test_retry_rules(void **state)
{
    (void)state;
    pending_table t;
    pending_init(&t);
    pending_request *p = add(&t, "r1");
    assert_true(pending_assign(p, "w1", 2));
    assert_true(pending_on_worker(p, "w1", 2));
    assert_true(pending_tried(p, "w1", 2));
    assert_false(pending_tried(p, "w2", 2));
    assert_true(pending_can_retry(p));
    for (int i = 2; i <= PENDING_MAX_ATTEMPTS; i++) {
        char w[8];
        snprintf(w, sizeof w, "w%d", i);
        assert_true(pending_assign(p, w, strlen(w)));
    }
    assert_false(pending_can_retry(p));
    assert_false(pending_assign(p, "w9", 2));

    pending_request *s = add(&t, "r2");
    pending_assign(s, "w1", 2);
    pending_mark_started(s);
    assert_null(s->payload);
    assert_false(pending_can_retry(s));

    pending_request *c = add(&t, "r3");
    pending_assign(c, "w1", 2);
    c->cancelled = true;
    assert_false(pending_can_retry(c));
    pending_free(&t);
}

static void test_worker_list(void **state)
{
    (void)state;
    pending_table t;
    pending_init(&t);
    pending_assign(add(&t, "a"), "w1", 2);
    pending_assign(add(&t, "b"), "w2", 2);
    pending_assign(add(&t, "c"), "w1", 2);
    add(&t, "d");  /* not yet assigned */
    pending_request *out[4];
    int n = pending_on_worker_list(&t, "w1", 2, out, 4);
    assert_int_equal(n, 2);
    for (int i = 0; i < n; i++)
        assert_true(!strcmp(out[i]->request_id, "a") || !strcmp(out[i]->request_id, "c"));
    assert_int_equal(pending_on_worker_list(&t, "w1", 2, out, 1), 2);
    assert_int_equal(pending_on_worker_list(&t, "w3", 2, out, 4), 0);
    pending_free(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_add_find_remove),
        cmocka_unit_test(test_retry_rules),
        cmocka_unit_test(test_worker_list),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
