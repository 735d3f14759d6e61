/* test_router_registry.c - the router's worker registry and scheduling
 * (services/router/registry.h):
 *   - heartbeats add a worker once and refresh it, replacing its model list;
 *   - a worker silent for 3 s expires, one heard from within 3 s does not;
 *   - the choice is the least-loaded worker that serves the model (queue depth + busy,
 *     or the router's own in-flight count when larger), ties in round robin;
 *   - no workers, no worker for the model and all tried are told apart;
 *   - oversize identities, empty models and a full table are refused, not crashed on.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "registry.h"

static const char *const SMOL[] = {"smol"};
static const char *const STORIES[] = {"stories"};

static registry_worker *beat(registry *r, const char *id, const char *const *models, int n,
                             int free_slots, int queue, double now)
{
    registry_beat b = {models, n, free_slots, queue, 0.0f};
    return registry_heartbeat(r, id, strlen(id), &b, now);
}

static void test_heartbeat_adds_then_refreshes(void **state)
{
    (void)state;
    registry r;
    registry_init(&r);
    registry_worker *w = beat(&r, "w1", SMOL, 1, 1, 0, 10.0);
    assert_non_null(w);
    assert_int_equal(r.n_workers, 1);
    assert_true(registry_serves(w, "smol"));
    w = beat(&r, "w1", STORIES, 1, 0, 2, 11.0);
    assert_int_equal(r.n_workers, 1);
    assert_false(registry_serves(w, "smol"));
    assert_true(registry_serves(w, "stories"));
    assert_true(registry_serves(w, "stories:wizard"));   /* adapters ride on their base */
    assert_false(registry_serves(w, "storie:wizard"));
    assert_false(registry_serves(w, "smol:wizard"));
    assert_int_equal(w->queue_depth, 2);
    assert_int_equal(w->busy, 1);
    assert_true(w->last_seen == 11.0);
    assert_ptr_equal(registry_find(&r, "w1", 2), w);
    assert_null(registry_find(&r, "w2", 2));
}

static int dead_count;
static void count_dead(const registry_worker *w, void *user)
{
    (void)w;
    (void)user;
    dead_count++;
}

static void test_silent_worker_expires(void **state)
{
    (void)state;
    registry r;
    registry_init(&r);
    beat(&r, "old", SMOL, 1, 1, 0, 0.0);
    beat(&r, "new", SMOL, 1, 1, 0, 1.0);
    dead_count = 0;
    assert_int_equal(registry_expire(&r, 2.9, count_dead, NULL), 0);
    assert_int_equal(registry_expire(&r, 3.0, count_dead, NULL), 1);
    assert_int_equal(dead_count, 1);
    assert_int_equal(r.n_workers, 1);
    assert_null(registry_find(&r, "old", 3));
    assert_non_null(registry_find(&r, "new", 3));
    /* A heartbeat keeps it alive. */
    beat(&r, "new", SMOL, 1, 1, 0, 3.5);
    assert_int_equal(registry_expire(&r, 6.0, NULL, NULL), 0);
    assert_int_equal(registry_expire(&r, 6.5, NULL, NULL), 1);
    assert_int_equal(r.n_workers, 0);
}

static void test_choose_least_loaded(void **state)
{
    (void)state;
    registry r;
    registry_init(&r);
    beat(&r, "busy", SMOL, 1, 0, 3, 0.0);   /* score 4 */
    beat(&r, "light", SMOL, 1, 0, 0, 0.0);  /* score 1 */
    beat(&r, "other", STORIES, 1, 1, 0, 0.0);
    registry_worker *w;
    assert_int_equal(registry_choose(&r, "smol", NULL, NULL, &w), REGISTRY_CHOSEN);
    assert_memory_equal(w->id, "light", 5);
    /* The router's own count wins over a stale heartbeat. */
    w->in_flight = 5;
    assert_int_equal(registry_choose(&r, "smol", NULL, NULL, &w), REGISTRY_CHOSEN);
    assert_memory_equal(w->id, "busy", 4);
    assert_int_equal(registry_choose(&r, "stories", NULL, NULL, &w), REGISTRY_CHOSEN);
    assert_memory_equal(w->id, "other", 5);
}

static void test_ties_round_robin(void **state)
{
    (void)state;
    registry r;
    registry_init(&r);
    beat(&r, "a", SMOL, 1, 1, 0, 0.0);
    beat(&r, "b", SMOL, 1, 1, 0, 0.0);
    beat(&r, "c", SMOL, 1, 1, 0, 0.0);
    beat(&r, "x", STORIES, 1, 1, 0, 0.0);
    int seen[3] = {0};
    for (int i = 0; i < 9; i++) {
        registry_worker *w;
        assert_int_equal(registry_choose(&r, "smol", NULL, NULL, &w), REGISTRY_CHOSEN);
        assert_true(w->id[0] >= 'a' && w->id[0] <= 'c');
        seen[w->id[0] - 'a']++;
    }
    assert_int_equal(seen[0], 3);
    assert_int_equal(seen[1], 3);
    assert_int_equal(seen[2], 3);
}

static bool exclude_a(const registry_worker *w, void *user)
{
    (void)user;
    return w->id[0] == 'a';
}

static void test_no_worker_reasons(void **state)
{
    (void)state;
    registry r;
    registry_init(&r);
    registry_worker *w;
    assert_int_equal(registry_choose(&r, "smol", NULL, NULL, &w), REGISTRY_NO_WORKERS);
    assert_null(w);
    beat(&r, "a", SMOL, 1, 1, 0, 0.0);
    assert_int_equal(registry_choose(&r, "stories", NULL, NULL, &w), REGISTRY_NO_MODEL);
    assert_int_equal(registry_choose(&r, "smol", exclude_a, NULL, &w), REGISTRY_ALL_EXCLUDED);
    beat(&r, "b", SMOL, 1, 0, 9, 0.0);
    assert_int_equal(registry_choose(&r, "smol", exclude_a, NULL, &w), REGISTRY_CHOSEN);
    assert_memory_equal(w->id, "b", 1);
}

static void test_bad_heartbeats_refused(void **state)
{
    (void)state;
    registry r;
    registry_init(&r);
    registry_beat b = {SMOL, 1, 1, 0, 0.0f};
    char long_id[REGISTRY_ID_MAX + 1];
    memset(long_id, 'x', sizeof long_id);
    assert_null(registry_heartbeat(&r, long_id, sizeof long_id, &b, 0.0));
    assert_null(registry_heartbeat(&r, "", 0, &b, 0.0));
    /* Empty and oversize model names are dropped, the rest kept. */
    char big[REGISTRY_NAME_MAX + 4];
    memset(big, 'm', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    const char *models[] = {"", big, "ok", NULL};
    b = (registry_beat){models, 4, 1, -5, 0.0f};
    registry_worker *w = registry_heartbeat(&r, "w", 1, &b, 0.0);
    assert_non_null(w);
    assert_int_equal(w->n_models, 1);
    assert_string_equal(w->models[0], "ok");
    assert_int_equal(w->queue_depth, 0);
    /* A full table ignores newcomers. */
    for (int i = 1; i < REGISTRY_MAX_WORKERS; i++) {
        char id[16];
        snprintf(id, sizeof id, "n%d", i);
        assert_non_null(beat(&r, id, SMOL, 1, 1, 0, 0.0));
    }
    assert_null(beat(&r, "late", SMOL, 1, 1, 0, 0.0));
    assert_int_equal(r.n_workers, REGISTRY_MAX_WORKERS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_heartbeat_adds_then_refreshes),
        cmocka_unit_test(test_silent_worker_expires),
        cmocka_unit_test(test_choose_least_loaded),
        cmocka_unit_test(test_ties_round_robin),
        cmocka_unit_test(test_no_worker_reasons),
        cmocka_unit_test(test_bad_heartbeats_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
