/* test_gateway_policy.c - the gateway's role policy (services/gateway/gw_policy.c):
 * the built-in policy's whole role x permission matrix, route matching (exact, prefix,
 * method, 404 vs 405), several roles on one key, and refused policy files. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "gw_policy.h"

static const char *const roles[] = {"admin", "user", "trainer", "auditor", "service"};
static const char *const perms[] = {"chat", "completions", "models", "keys", "files", "fine_tuning", "audit", "batch"};

/* Which permission each role holds in the default policy: the definitions. */
static const int want[5][8] = {
    /*          chat compl models keys files ft audit batch */
    /* admin */ {1, 1, 1, 1, 1, 1, 1, 1},
    /* user */  {1, 1, 1, 0, 0, 0, 0, 0},
    /* trainer */ {0, 0, 1, 0, 1, 1, 0, 0},
    /* auditor */ {0, 0, 0, 0, 0, 0, 1, 0},
    /* service */ {0, 0, 1, 0, 0, 0, 0, 1},
};

static void test_default_matrix(void **state)
{
    (void)state;
    gw_policy p;
    char err[256];
    assert_int_equal(gw_policy_load(&p, "", err, sizeof err), 0);
    for (int r = 0; r < 5; r++)
        for (int k = 0; k < 8; k++) {
            bool got = gw_policy_allows(&p, roles[r], perms[k]);
            if (got != (bool)want[r][k]) fail_msg("role %s permission %s: got %d", roles[r], perms[k], got);
        }
    assert_false(gw_policy_allows(&p, "nobody", "chat"));
    assert_true(gw_policy_allows(&p, "auditor,user", "chat"));
    assert_true(gw_policy_allows(&p, "auditor,user", "audit"));
    assert_false(gw_policy_allows(&p, "auditor,user", "keys"));
    assert_false(gw_policy_allows(&p, "", "chat"));
    /* "user" is not a prefix match of "users" or the reverse. */
    assert_false(gw_policy_allows(&p, "use", "chat"));
    gw_policy_free(&p);
}

static void test_routes(void **state)
{
    (void)state;
    gw_policy p;
    char err[256];
    assert_int_equal(gw_policy_load(&p, NULL, err, sizeof err), 0);
    const gw_policy_route *r = NULL;
    assert_int_equal(gw_policy_route_for(&p, "POST", "/v1/chat/completions", &r), GW_ROUTE_FOUND);
    assert_string_equal(r->permission, "chat");
    assert_int_equal(gw_policy_route_for(&p, "GET", "/v1/chat/completions", &r), GW_ROUTE_WRONG_METHOD);
    assert_int_equal(gw_policy_route_for(&p, "POST", "/v1/chat/completionsX", &r), GW_ROUTE_NO_PATH);
    assert_int_equal(gw_policy_route_for(&p, "DELETE", "/admin/keys/key-1", &r), GW_ROUTE_FOUND);
    assert_string_equal(r->permission, "keys");
    assert_int_equal(gw_policy_route_for(&p, "GET", "/admin/keys", &r), GW_ROUTE_FOUND);
    assert_int_equal(gw_policy_route_for(&p, "POST", "/v1/fine_tuning/jobs/ft-1/cancel", &r), GW_ROUTE_FOUND);
    assert_string_equal(r->permission, "fine_tuning");
    assert_int_equal(gw_policy_route_for(&p, "GET", "/v1/audit/events", &r), GW_ROUTE_FOUND);
    assert_string_equal(r->permission, "audit");
    assert_int_equal(gw_policy_route_for(&p, "GET", "/nothing", &r), GW_ROUTE_NO_PATH);
    assert_true(gw_policy_has_role(&p, "trainer"));
    assert_false(gw_policy_has_role(&p, "root"));
    gw_policy_free(&p);
}

static void test_custom_and_refused(void **state)
{
    (void)state;
    gw_policy p;
    char err[256];
    assert_int_equal(gw_policy_parse(&p, "route GET /x x_read # comment\nrole reader x_read\n\n", err, sizeof err), 0);
    const gw_policy_route *r = NULL;
    assert_int_equal(gw_policy_route_for(&p, "GET", "/x", &r), GW_ROUTE_FOUND);
    assert_true(gw_policy_allows(&p, "reader", "x_read"));
    gw_policy_free(&p);

    assert_int_equal(gw_policy_parse(&p, "role a x\nrole a y\n", err, sizeof err), -1);
    assert_non_null(strstr(err, "line 2"));
    assert_int_equal(gw_policy_parse(&p, "route PUT /x x\nrole a x\n", err, sizeof err), -1);
    assert_int_equal(gw_policy_parse(&p, "route GET x x\nrole a x\n", err, sizeof err), -1);
    assert_int_equal(gw_policy_parse(&p, "route GET /x\nrole a x\n", err, sizeof err), -1);
    assert_int_equal(gw_policy_parse(&p, "grant a x\n", err, sizeof err), -1);
    assert_non_null(strstr(err, "unknown rule"));
    assert_int_equal(gw_policy_parse(&p, "route GET /x x\n", err, sizeof err), -1);
    assert_int_equal(gw_policy_load(&p, "/nonexistent/policy", err, sizeof err), -1);
    assert_non_null(strstr(err, "/nonexistent/policy"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_default_matrix),
        cmocka_unit_test(test_routes),
        cmocka_unit_test(test_custom_and_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
