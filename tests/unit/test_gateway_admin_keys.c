/* test_gateway_admin_keys.c - /admin/keys (services/gateway/gw_admin_keys.c) and the
 * principal a key gives (gw_auth.c): create with attributes, the key shown once and
 * working, list, revoke, the refused bodies, and expired/revoked keys refused by
 * authentication with their own messages. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "gw_admin_keys.h"
#include "gw_auth.h"

static char tmpdir[256];
static apikey_store store;
static gw_policy policy;

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/citadel-test-adminkeys-XXXXXX");
    if (mkdtemp(tmpdir) == NULL) return -1;
    memset(&store, 0, sizeof store);
    snprintf(store.path, sizeof store.path, "%s/keys.db", tmpdir);
    char err[256];
    return gw_policy_load(&policy, "", err, sizeof err);
}

static int teardown(void **state)
{
    (void)state;
    apikeys_free(&store);
    gw_policy_free(&policy);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* Calls the handler; returns the status (or the error's) and the parsed body in *j. */
static int call(const char *method, const char *path, const char *body, json_t **j, gw_error *e)
{
    char *out = NULL;
    size_t len = 0;
    int st = gw_admin_keys_handle(&store, &policy, method, path, body, body ? strlen(body) : 0, "test",
                                  &out, &len, e);
    *j = NULL;
    if (st < 0) return e->status;
    *j = json_loadb(out, len, 0, NULL);
    free(out);
    return st;
}

static void test_create_list_revoke(void **state)
{
    (void)state;
    json_t *j;
    gw_error e;
    assert_int_equal(call("POST", "/admin/keys",
                          "{\"roles\":[\"user\"],\"models\":[\"m1\"],\"rpm\":3,\"tpm\":100,\"expires_in\":\"1h\",\"user\":\"bob\"}",
                          &j, &e), 201);
    const char *key = json_string_value(json_object_get(j, "key"));
    assert_non_null(key);
    char id[64];
    snprintf(id, sizeof id, "%s", json_string_value(json_object_get(j, "id")));
    assert_string_equal(json_string_value(json_object_get(j, "status")), "live");
    assert_int_equal(json_integer_value(json_object_get(j, "rpm")), 3);
    assert_true(json_integer_value(json_object_get(j, "expires")) > time(NULL) + 3500);

    /* The key authenticates as a principal with the key's attributes. */
    gw_auth auth = {.keys = &store, .default_rpm = 50, .default_tpm = 0};
    gw_principal who;
    char header[128];
    snprintf(header, sizeof header, "Bearer %s", key);
    assert_int_equal(gw_auth_bearer(&auth, header, &who, &e), 0);
    assert_string_equal(who.key_id, id);
    assert_string_equal(who.user, "bob");
    assert_string_equal(who.roles, "user");
    assert_int_equal(who.rpm, 3);
    assert_int_equal(who.tpm, 100);
    assert_true(gw_principal_may_use_model(&who, "m1"));
    assert_false(gw_principal_may_use_model(&who, "m2"));
    json_decref(j);

    /* The list shows it without the key. */
    assert_int_equal(call("GET", "/admin/keys", NULL, &j, &e), 200);
    json_t *data = json_object_get(j, "data");
    assert_int_equal(json_array_size(data), 1);
    assert_null(json_object_get(json_array_get(data, 0), "key"));
    json_decref(j);

    /* Revoked: listed as such, refused by authentication. */
    char path[128];
    snprintf(path, sizeof path, "/admin/keys/%s", id);
    assert_int_equal(call("DELETE", path, NULL, &j, &e), 200);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "revoked");
    json_decref(j);
    assert_int_equal(gw_auth_bearer(&auth, header, &who, &e), -1);
    assert_int_equal(e.status, 401);
    assert_string_equal(e.code, "revoked_api_key");
    assert_int_equal(call("DELETE", "/admin/keys/key-nope", NULL, &j, &e), 404);
}

static void test_defaults_and_expired(void **state)
{
    (void)state;
    gw_auth auth = {.keys = &store, .default_rpm = 50, .default_tpm = 7000};
    apikey tmpl = {.roles = "service", .expires = 1000};
    char key[APIKEY_LEN + 1], err[256], header[128];
    assert_int_equal(apikeys_create(&store, &tmpl, key, NULL, err, sizeof err), 0);
    snprintf(header, sizeof header, "Bearer %s", key);
    gw_principal who;
    gw_error e;
    assert_int_equal(gw_auth_bearer(&auth, header, &who, &e), -1);
    assert_string_equal(e.code, "expired_api_key");
    apikey live = {.roles = "service"};
    assert_int_equal(apikeys_create(&store, &live, key, NULL, err, sizeof err), 0);
    snprintf(header, sizeof header, "bearer  %s ", key);
    assert_int_equal(gw_auth_bearer(&auth, header, &who, &e), 0);
    assert_int_equal(who.rpm, 50);
    assert_int_equal(who.tpm, 7000);
    assert_string_equal(who.user, who.key_id);
    assert_int_equal(gw_auth_bearer(&auth, NULL, &who, &e), -1);
    assert_string_equal(e.code, "invalid_api_key");
    assert_int_equal(gw_auth_bearer(&auth, "Basic abc", &who, &e), -1);
    assert_int_equal(gw_auth_bearer(&auth, "Bearer ck-00", &who, &e), -1);
    assert_int_equal(e.status, 401);
}

static void test_refused_bodies(void **state)
{
    (void)state;
    json_t *j;
    gw_error e;
    assert_int_equal(call("POST", "/admin/keys", "not json", &j, &e), 400);
    assert_int_equal(call("POST", "/admin/keys", "{}", &j, &e), 400);
    assert_string_equal(e.param, "roles");
    assert_int_equal(call("POST", "/admin/keys", "{\"roles\":[\"root\"]}", &j, &e), 400);
    assert_string_equal(e.code, "unknown_role");
    assert_int_equal(call("POST", "/admin/keys", "{\"roles\":[\"user\"],\"rpm\":-1}", &j, &e), 400);
    assert_int_equal(call("POST", "/admin/keys", "{\"roles\":[\"user\"],\"expires_in\":\"soon\"}", &j, &e), 400);
    assert_int_equal(call("POST", "/admin/keys", "{\"roles\":[\"user\"],\"colour\":1}", &j, &e), 400);
    assert_int_equal(call("POST", "/admin/keys", "{\"roles\":[\"us er\"]}", &j, &e), 400);
    assert_int_equal(call("POST", "/admin/keys", "{\"role\":\"user\",\"id\":\"ops-1\"}", &j, &e), 201);
    json_decref(j);
    assert_int_equal(call("POST", "/admin/keys", "{\"role\":\"user\",\"id\":\"ops-1\"}", &j, &e), 409);
    assert_int_equal(call("PUT", "/admin/keys", NULL, &j, &e), 405);
    assert_int_equal(store.n, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_create_list_revoke, setup, teardown),
        cmocka_unit_test_setup_teardown(test_defaults_and_expired, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused_bodies, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
