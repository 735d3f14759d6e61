/* test_apikeys.c - the API key store (common/apikeys.c): hashing, key format, the
 * first admin key with mode 0600, attributes through a write and a reload, expiry,
 * revocation, the old three-field lines, malformed lines, the hash index with many
 * keys, durations. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "apikeys.h"

static char tmpdir[256];

static int make_tmp(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/citadel-test-apikeys-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int remove_tmp(void **state)
{
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_hash_and_generate(void **state)
{
    (void)state;
    uint8_t h[32];
    assert_int_equal(apikeys_hash("abc", 3, h), 0);
    static const uint8_t want[8] = {0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea};
    assert_memory_equal(h, want, sizeof want);
    char a[APIKEY_LEN + 1], b[APIKEY_LEN + 1];
    assert_int_equal(apikeys_generate(a), 0);
    assert_int_equal(apikeys_generate(b), 0);
    assert_int_equal(strlen(a), APIKEY_LEN);
    assert_memory_equal(a, "ck-", 3);
    assert_string_not_equal(a, b);
}

static void test_bootstrap_makes_private_admin_key(void **state)
{
    (void)state;
    char dir[300], keyfile[400], db[400], key[128] = "";
    snprintf(dir, sizeof dir, "%s/keys", tmpdir);
    apikey_store st = {0};
    bool created = false;
    char err[256];
    assert_int_equal(apikeys_bootstrap(&st, dir, &created, err, sizeof err), 0);
    assert_true(created);
    snprintf(keyfile, sizeof keyfile, "%s/admin.key", dir);
    snprintf(db, sizeof db, "%s/keys.db", dir);
    struct stat sb;
    assert_int_equal(stat(keyfile, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    assert_int_equal(stat(db, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    FILE *f = fopen(keyfile, "r");
    assert_non_null(f);
    assert_non_null(fgets(key, sizeof key, f));
    fclose(f);
    key[strcspn(key, "\n")] = '\0';
    apikey_status status;
    const apikey *k = apikeys_verify(&st, key, strlen(key), time(NULL), &status);
    assert_non_null(k);
    assert_int_equal(status, APIKEY_OK);
    assert_string_equal(k->roles, "admin");
    /* The key itself is nowhere in keys.db. */
    char text[4096];
    f = fopen(db, "r");
    size_t n = fread(text, 1, sizeof text - 1, f);
    text[n] = '\0';
    fclose(f);
    assert_null(strstr(text, key + 3));
    /* A second start finds the admin key and makes none. */
    apikeys_free(&st);
    assert_int_equal(apikeys_bootstrap(&st, dir, &created, err, sizeof err), 0);
    assert_false(created);
    assert_int_equal(st.n, 1);
    /* Revoking the only admin key makes the next start mint a new one, "admin-2". */
    assert_int_equal(apikeys_revoke(&st, "admin", time(NULL), err, sizeof err), 0);
    assert_int_equal(apikeys_bootstrap(&st, dir, &created, err, sizeof err), 0);
    assert_true(created);
    assert_non_null(apikeys_find(&st, "admin-2"));
    apikeys_free(&st);
}

static void test_create_attributes_roundtrip(void **state)
{
    (void)state;
    apikey_store st = {0};
    char err[256];
    snprintf(st.path, sizeof st.path, "%s/keys.db", tmpdir);
    apikey tmpl = {.roles = "user,trainer", .models = "m1,m2", .rpm = 7, .tpm = 900, .expires = 4102444800LL,
                   .user = "alice"};
    char key[APIKEY_LEN + 1];
    apikey made;
    assert_int_equal(apikeys_create(&st, &tmpl, key, &made, err, sizeof err), 0);
    assert_memory_equal(made.key_id, "key-", 4);
    apikey_store again = {0};
    assert_int_equal(apikeys_load(&again, st.path, err, sizeof err), 0);
    assert_int_equal(again.n, 1);
    const apikey *k = &again.keys[0];
    assert_string_equal(k->key_id, made.key_id);
    assert_string_equal(k->roles, "user,trainer");
    assert_string_equal(k->models, "m1,m2");
    assert_string_equal(k->user, "alice");
    assert_int_equal(k->rpm, 7);
    assert_int_equal(k->tpm, 900);
    assert_int_equal(k->expires, 4102444800LL);
    assert_true(k->created > 0);
    assert_true(apikeys_list_has(k->models, "m2"));
    assert_false(apikeys_list_has(k->models, "m"));
    /* Duplicate ids are refused; bad words are refused before anything is written. */
    apikey dup = {.roles = "user"};
    snprintf(dup.key_id, sizeof dup.key_id, "%s", made.key_id);
    assert_int_equal(apikeys_create(&st, &dup, key, NULL, err, sizeof err), -1);
    assert_non_null(strstr(err, "exists"));
    apikey bad = {.roles = "us er"};
    assert_int_equal(apikeys_create(&st, &bad, key, NULL, err, sizeof err), -1);
    apikey bad_models = {.roles = "user", .models = "a,,b"};
    assert_int_equal(apikeys_create(&st, &bad_models, key, NULL, err, sizeof err), -1);
    assert_int_equal(st.n, 1);
    apikeys_free(&again);
    apikeys_free(&st);
}

static void test_expiry_and_revocation(void **state)
{
    (void)state;
    apikey_store st = {0}, other = {0};
    char err[256], key[APIKEY_LEN + 1];
    snprintf(st.path, sizeof st.path, "%s/keys.db", tmpdir);
    apikey tmpl = {.roles = "user", .expires = 1000};
    snprintf(tmpl.key_id, sizeof tmpl.key_id, "short");
    assert_int_equal(apikeys_create(&st, &tmpl, key, NULL, err, sizeof err), 0);
    apikey_status status;
    assert_non_null(apikeys_verify(&st, key, strlen(key), 999, &status));
    assert_int_equal(status, APIKEY_OK);
    apikeys_verify(&st, key, strlen(key), 1000, &status);
    assert_int_equal(status, APIKEY_EXPIRED);
    assert_string_equal(apikeys_state(&st.keys[0], 1000), "expired");

    /* Another reader of the same file sees the revocation on its next reload. */
    assert_int_equal(apikeys_load(&other, st.path, err, sizeof err), 0);
    assert_int_equal(apikeys_revoke(&st, "short", 500, err, sizeof err), 0);
    assert_int_equal(apikeys_revoke(&st, "short", 600, err, sizeof err), 1);
    assert_int_equal(apikeys_revoke(&st, "nobody", 600, err, sizeof err), -1);
    assert_int_equal(apikeys_reload_if_changed(&other, err, sizeof err), 1);
    assert_int_equal(apikeys_reload_if_changed(&other, err, sizeof err), 0);
    apikeys_verify(&other, key, strlen(key), 10, &status);
    assert_int_equal(status, APIKEY_REVOKED);
    assert_int_equal(other.keys[0].revoked, 500);
    /* A wrong key is unknown. */
    assert_null(apikeys_verify(&other, "ck-0", 4, 10, &status));
    assert_int_equal(status, APIKEY_UNKNOWN);
    apikeys_free(&st);
    apikeys_free(&other);
}

static void test_old_lines_and_malformed(void **state)
{
    (void)state;
    char path[300], err[256] = "";
    snprintf(path, sizeof path, "%s/keys.db", tmpdir);
    uint8_t h[32];
    apikeys_hash("ck-old", 6, h);
    char hex[65];
    for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", h[i]);
    char text[1024];
    snprintf(text, sizeof text,
             "# comment\n\nold %s admin\n"
             "bad1 zz user\n"
             "bad2 %s user color=blue\n"
             "bad3 %s user rpm=-1\n",
             hex, hex, hex);
    write_text(path, text);
    apikey_store st = {0};
    assert_int_equal(apikeys_load(&st, path, err, sizeof err), 0);
    assert_int_equal(st.n, 1);
    assert_non_null(strstr(err, ":4:"));
    apikey_status status;
    const apikey *k = apikeys_verify(&st, "ck-old", 6, time(NULL), &status);
    assert_non_null(k);
    assert_int_equal(status, APIKEY_OK);
    assert_string_equal(k->roles, "admin");
    assert_string_equal(k->models, "");
    apikeys_free(&st);
}

/* The hash index: with many keys every one finds its own record (probe chains cross the
 * table's end), others find none, and a store with no index finds nothing. */
static void test_index_many_keys(void **state)
{
    (void)state;
    enum { N = 700 };
    static char keys[N][APIKEY_LEN + 1];
    apikey_store st = {.keys = calloc(N, sizeof(apikey)), .n = N};
    assert_non_null(st.keys);
    for (int i = 0; i < N; i++) {
        assert_int_equal(apikeys_generate(keys[i]), 0);
        assert_int_equal(apikeys_hash(keys[i], APIKEY_LEN, st.keys[i].hash), 0);
        snprintf(st.keys[i].key_id, sizeof st.keys[i].key_id, "k%d", i);
    }
    apikey_status status;
    assert_null(apikeys_verify(&st, keys[0], APIKEY_LEN, 0, &status));   /* not indexed yet */
    assert_int_equal(apikeys_reindex(&st), 0);
    assert_true(st.index_cap >= 2 * N);
    for (int i = 0; i < N; i++) {
        const apikey *k = apikeys_verify(&st, keys[i], APIKEY_LEN, 0, &status);
        assert_non_null(k);
        assert_int_equal(k - st.keys, i);
    }
    char other[APIKEY_LEN + 1];
    assert_int_equal(apikeys_generate(other), 0);
    assert_null(apikeys_verify(&st, other, APIKEY_LEN, 0, &status));
    apikeys_free(&st);
}

static void test_durations(void **state)
{
    (void)state;
    int64_t s;
    assert_int_equal(apikeys_parse_duration("90", &s), 0);
    assert_int_equal(s, 90);
    assert_int_equal(apikeys_parse_duration("15m", &s), 0);
    assert_int_equal(s, 900);
    assert_int_equal(apikeys_parse_duration("12h", &s), 0);
    assert_int_equal(s, 43200);
    assert_int_equal(apikeys_parse_duration("30d", &s), 0);
    assert_int_equal(s, 2592000);
    assert_int_equal(apikeys_parse_duration("0", &s), -1);
    assert_int_equal(apikeys_parse_duration("-5m", &s), -1);
    assert_int_equal(apikeys_parse_duration("5y", &s), -1);
    assert_int_equal(apikeys_parse_duration("", &s), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hash_and_generate),
        cmocka_unit_test_setup_teardown(test_bootstrap_makes_private_admin_key, make_tmp, remove_tmp),
        cmocka_unit_test_setup_teardown(test_create_attributes_roundtrip, make_tmp, remove_tmp),
        cmocka_unit_test_setup_teardown(test_expiry_and_revocation, make_tmp, remove_tmp),
        cmocka_unit_test_setup_teardown(test_old_lines_and_malformed, make_tmp, remove_tmp),
        cmocka_unit_test(test_index_many_keys),
        cmocka_unit_test(test_durations),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
