/* test_router_cache.c - the router's response cache (services/router/cache.h), the parts
 * that need no Redis (tests/integration/cache_test.sh runs it against a real one):
 *   - only deterministic requests are cacheable: temperature 0, or an explicit seed
 *     (seed 0 included);
 *   - the key ignores what cannot change the answer (ids, stream, priority, deadline,
 *     user, Cache-Control) and changes with everything that can (model, adapter,
 *     messages, prompt, each sampling parameter, stop strings, logprobs);
 *   - without a cache every outcome is "none"; with Redis configured but not connected a
 *     cacheable request goes on as "bypass" at once, counted as down, and the outcome is
 *     remembered for the header until forgotten.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cache.h"

static Citadel__ChatMessage msg1 = CITADEL__CHAT_MESSAGE__INIT;
static Citadel__ChatMessage *msgs[1] = {&msg1};
static char *stops[1] = {"END"};

static Citadel__GenerateRequest base_request(void)
{
    Citadel__GenerateRequest r = CITADEL__GENERATE_REQUEST__INIT;
    msg1.role = "user";
    msg1.content = "Once upon a time";
    r.request_id = "req-1";
    r.key_id = "admin";
    r.model = "stories260K";
    r.n_messages = 1;
    r.messages = msgs;
    r.max_tokens = 24;
    r.temperature = 0;
    r.top_k = 40;
    r.top_p = 0.95f;
    r.min_p = 0.05f;
    return r;
}

static void key_of(const Citadel__GenerateRequest *r, char out[128])
{
    router_cache_key(r, out, 128);
    assert_int_equal(strncmp(out, "citadel:cache:v1:", 17), 0);
    assert_int_equal(strlen(out), 17 + 64);
}

static void test_cacheable(void **state)
{
    (void)state;
    Citadel__GenerateRequest r = base_request();
    assert_true(router_cache_cacheable(&r));
    r.temperature = 0.8f;
    assert_false(router_cache_cacheable(&r));
    r.has_seed = true;   /* seed 0 is a seed */
    assert_true(router_cache_cacheable(&r));
}

static void test_key_ignores_what_cannot_change_the_answer(void **state)
{
    (void)state;
    Citadel__GenerateRequest r = base_request();
    char a[128], b[128];
    key_of(&r, a);
    r.request_id = "req-2";
    r.key_id = "someone-else";
    r.user = "alice";
    r.stream = true;
    r.priority = -1;
    r.deadline_unix_ms = 123456;
    r.cache_skip_store = true;
    key_of(&r, b);
    assert_string_equal(a, b);
}

/* Each change of a field that shapes the answer gives another key. */
static void test_key_changes_with_the_answer(void **state)
{
    (void)state;
    char base[128], k[128];
    Citadel__GenerateRequest r0 = base_request();
    key_of(&r0, base);
    for (int change = 0; change < 13; change++) {
        Citadel__GenerateRequest r = base_request();
        switch (change) {
        case 0: r.model = "other"; break;
        case 1: r.adapter = "lora-a"; break;
        case 2: r.max_tokens = 25; break;
        case 3: r.top_k = 41; break;
        case 4: r.top_p = 0.9f; break;
        case 5: r.min_p = 0.1f; break;
        case 6: r.has_seed = true; break;
        case 7: r.n_stop = 1; r.stop = stops; break;
        case 8: r.presence_penalty = 0.5f; break;
        case 9: r.repetition_penalty = 1.1f; break;
        case 10: r.logprobs = true; break;
        case 11: r.n_messages = 0; r.prompt = "Once upon a time"; break;
        case 12: r.temperature = 0.5f; break;
        }
        key_of(&r, k);
        if (strcmp(k, base) == 0)
            fail_msg("change %d left the key unchanged", change);
        if (change == 12) {   /* the message text itself */
            Citadel__ChatMessage other = {.base = msg1.base, .role = "user", .content = "Once upon a tim"};
            Citadel__ChatMessage *om[1] = {&other};
            Citadel__GenerateRequest r2 = base_request();
            r2.messages = om;
            key_of(&r2, k);
            assert_string_not_equal(k, base);
        }
    }
}

static void noop_answer(void *arg, const char *request_id, enum router_cache_outcome o,
                        const Citadel__CachedResponse *c)
{
    (void)arg; (void)request_id; (void)o; (void)c;
    fail_msg("no lookup should have been made");
}

static void test_without_cache_outcome_is_none(void **state)
{
    (void)state;
    router_cache_config cfg = {.redis = "", .timeout_ms = 50, .ttl_s = 60, .max_entry_bytes = 1 << 20};
    metrics_registry *reg = metrics_registry_new("router");
    router_cache *c = router_cache_new(&cfg, reg);
    assert_non_null(c);
    Citadel__GenerateRequest r = base_request();
    assert_int_equal(router_cache_begin(c, &r, 1.0, noop_answer, NULL), CACHE_NONE);
    assert_string_equal(router_cache_outcome_name(router_cache_outcome_of(c, "req-1")), "");
    assert_int_equal(router_cache_tick(c, 1.0), -1);
    router_cache_free(c);
    metrics_registry_free(reg);
}

static void test_redis_down_is_bypass_at_once(void **state)
{
    (void)state;
    /* Port 1 on loopback: nothing listens, and the cache is not connected before the
     * first tick anyway. */
    router_cache_config cfg = {.redis = "127.0.0.1:1", .timeout_ms = 50, .ttl_s = 60, .max_entry_bytes = 1 << 20};
    metrics_registry *reg = metrics_registry_new("router");
    router_cache *c = router_cache_new(&cfg, reg);
    assert_non_null(c);
    Citadel__GenerateRequest r = base_request();
    assert_int_equal(router_cache_begin(c, &r, 1.0, noop_answer, NULL), CACHE_BYPASS);
    assert_string_equal(router_cache_outcome_name(router_cache_outcome_of(c, "req-1")), "bypass");
    r.request_id = "req-2";
    r.temperature = 0.7f;   /* not cacheable: bypass too, but not counted as down */
    assert_int_equal(router_cache_begin(c, &r, 1.0, noop_answer, NULL), CACHE_BYPASS);
    router_cache_forget(c, "req-1");
    assert_int_equal(router_cache_outcome_of(c, "req-1"), CACHE_NONE);
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    metrics_render(reg, f);
    fclose(f);
    assert_non_null(strstr(text, "citadel_router_cache_errors_total{reason=\"down\"} 1\n"));
    assert_non_null(strstr(text, "citadel_router_cache_requests_total{result=\"bypass\"} 2\n"));
    free(text);
    router_cache_free(c);
    metrics_registry_free(reg);
}

static void test_bad_address_refused(void **state)
{
    (void)state;
    router_cache_config cfg = {.redis = "no-port", .timeout_ms = 50, .ttl_s = 60, .max_entry_bytes = 1 << 20};
    metrics_registry *reg = metrics_registry_new("router");
    assert_null(router_cache_new(&cfg, reg));
    metrics_registry_free(reg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cacheable),
        cmocka_unit_test(test_key_ignores_what_cannot_change_the_answer),
        cmocka_unit_test(test_key_changes_with_the_answer),
        cmocka_unit_test(test_without_cache_outcome_is_none),
        cmocka_unit_test(test_redis_down_is_bypass_at_once),
        cmocka_unit_test(test_bad_address_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
