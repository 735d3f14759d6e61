/* test_gateway_keys.c - the gateway's API key store (services/gateway/gw_keys.c):
 * hashing, key format, first-start admin key with mode 0600, verification, reload. */
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

#include "gw_keys.h"

static char tmpdir[256];

static int make_tmp(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/citadel-test-keys-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int remove_tmp(void **state)
{
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static void read_file(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t n = fread(buf, 1, cap - 1, f);
    buf[n] = '\0';
    fclose(f);
}

static void test_hash_known_vector(void **state)
{
    (void)state;
    uint8_t h[32];
    assert_int_equal(gw_keys_hash("abc", 3, h), 0);
    static const uint8_t want[8] = {0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea};
    assert_memory_equal(h, want, sizeof want);
}

static void test_generate_format(void **state)
{
    (void)state;
    char a[GW_KEY_LEN + 1], b[GW_KEY_LEN + 1];
    assert_int_equal(gw_keys_generate(a), 0);
    assert_int_equal(gw_keys_generate(b), 0);
    assert_int_equal(strlen(a), GW_KEY_LEN);
    assert_memory_equal(a, "ck-", 3);
    for (int i = 3; i < GW_KEY_LEN; i++) assert_non_null(strchr("0123456789abcdef", a[i]));
    assert_string_not_equal(a, b);
}

static void test_bootstrap_makes_private_admin_key(void **state)
{
    (void)state;
    char dir[300], path[400], key[128];
    snprintf(dir, sizeof dir, "%s/keys", tmpdir);
    gw_keystore ks = {0};
    char err[256] = "";
    bool created = false;
    assert_int_equal(gw_keys_bootstrap(&ks, dir, &created, err, sizeof err), 0);
    assert_true(created);

    struct stat st;
    snprintf(path, sizeof path, "%s/admin.key", dir);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    snprintf(path, sizeof path, "%s/keys.db", dir);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(stat(dir, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);

    /* The key file holds the key; keys.db holds only its hash. */
    snprintf(path, sizeof path, "%s/admin.key", dir);
    read_file(path, key, sizeof key);
    key[strcspn(key, "\n")] = '\0';
    assert_int_equal(strlen(key), GW_KEY_LEN);
    char db[512];
    snprintf(path, sizeof path, "%s/keys.db", dir);
    read_file(path, db, sizeof db);
    assert_null(strstr(db, key + 3));
    assert_memory_equal(db, "admin ", 6);

    const gw_key_entry *e = gw_keys_verify(&ks, key, strlen(key));
    assert_non_null(e);
    assert_string_equal(e->key_id, "admin");
    assert_string_equal(e->role, "admin");
    /* Wrong keys: one changed character, a prefix, empty. */
    key[10] = key[10] == 'a' ? 'b' : 'a';
    assert_null(gw_keys_verify(&ks, key, strlen(key)));
    assert_null(gw_keys_verify(&ks, key, 10));
    assert_null(gw_keys_verify(&ks, "", 0));

    /* A second start keeps the existing key. */
    gw_keystore ks2 = {0};
    assert_int_equal(gw_keys_bootstrap(&ks2, dir, &created, err, sizeof err), 0);
    assert_false(created);
    assert_int_equal(ks2.n, 1);
    gw_keys_free(&ks);
    gw_keys_free(&ks2);
}

static void test_load_skips_malformed_lines(void **state)
{
    (void)state;
    char path[400];
    snprintf(path, sizeof path, "%s/mixed.db", tmpdir);
    uint8_t h[32];
    char hex[65];
    gw_keys_hash("ck-user", 7, h);
    for (int i = 0; i < 32; i++) sprintf(hex + 2 * i, "%02x", h[i]);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "# comment\n\nbad line\nalso %s\nshort abcd user\nu1 %s user\nx %s user extra\n",
            hex, hex, hex);
    fclose(f);
    gw_keystore ks = {0};
    char err[256] = "";
    assert_int_equal(gw_keys_load(&ks, path, err, sizeof err), 0);
    assert_int_equal(ks.n, 1);
    assert_true(strstr(err, "malformed") != NULL);
    const gw_key_entry *e = gw_keys_verify(&ks, "ck-user", 7);
    assert_non_null(e);
    assert_string_equal(e->key_id, "u1");
    assert_string_equal(e->role, "user");
    gw_keys_free(&ks);
}

static void test_add_and_reload(void **state)
{
    (void)state;
    char path[400], err[256];
    snprintf(path, sizeof path, "%s/reload.db", tmpdir);
    gw_keystore a = {0}, b = {0};
    assert_int_equal(gw_keys_load(&a, path, err, sizeof err), 0);   /* missing: empty */
    assert_int_equal(a.n, 0);
    assert_int_equal(gw_keys_load(&b, path, err, sizeof err), 0);
    assert_int_equal(gw_keys_add(&a, "k1", "ck-one", "user", err, sizeof err), 0);
    assert_non_null(gw_keys_verify(&a, "ck-one", 6));
    /* b sees the change only after a reload. */
    assert_null(gw_keys_verify(&b, "ck-one", 6));
    assert_int_equal(gw_keys_reload_if_changed(&b, err, sizeof err), 1);
    assert_non_null(gw_keys_verify(&b, "ck-one", 6));
    assert_int_equal(gw_keys_reload_if_changed(&b, err, sizeof err), 0);
    assert_int_equal(gw_keys_add(&a, "bad id", "ck-two", "user", err, sizeof err), -1);
    gw_keys_free(&a);
    gw_keys_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hash_known_vector),
        cmocka_unit_test(test_generate_format),
        cmocka_unit_test(test_bootstrap_makes_private_admin_key),
        cmocka_unit_test(test_load_skips_malformed_lines),
        cmocka_unit_test(test_add_and_reload),
    };
    return cmocka_run_group_tests(tests, make_tmp, remove_tmp);
}
