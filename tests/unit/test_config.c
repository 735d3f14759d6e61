/* test_config.c - the settings registry (common/config.h):
 *   - with nothing given every setting has its default;
 *   - flag > environment > file > default, each source remembered; --config and
 *     CITADEL_CONFIG name the file; --name value, --name=value and a bare bool flag;
 *   - --help is reported (even beside a mistake) and lists every flag, environment
 *     variable, default and range, never a secret's default;
 *   - bad values, unknown flags and file keys, a missing file and stray arguments are
 *     errors naming the setting and where the value came from, never a secret's value;
 *   - durations take ms/s/m/h; config_print masks secrets.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"

static const config_setting table[] = {
    {"test_host", CONFIG_STRING, "localhost", "host to bind", 0, 0, false},
    {"test_port", CONFIG_INT, "9101", "admin port", 1, 65535, false},
    {"test_verbose", CONFIG_BOOL, "false", "say more", 0, 0, false},
    {"test_timeout", CONFIG_DURATION, "30s", "drain timeout", 0, 0, false},
    {"test_api_key", CONFIG_STRING, "dflt-secret-xyz", "the key", 0, 0, true},
    {"test_workers", CONFIG_INT, "1", "workers", 0, 0, false},
};
#define N_TABLE (sizeof table / sizeof table[0])

static const char *const env_names[] = {"CITADEL_TEST_HOST", "CITADEL_TEST_PORT", "CITADEL_TEST_VERBOSE",
                                        "CITADEL_TEST_TIMEOUT", "CITADEL_TEST_API_KEY", "CITADEL_TEST_WORKERS",
                                        "CITADEL_CONFIG"};

static int clear_env(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof env_names / sizeof env_names[0]; i++)
        unsetenv(env_names[i]);
    return 0;
}

/* Writes text to a fresh temporary file; the path is in path (caller unlinks). */
static void write_file(char *path, const char *text)
{
    strcpy(path, "/tmp/citadel-test-config-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
}

/* Loads argv (NULL-terminated, argv[0] added) into a new config; rc in *rc. */
static config *load(int *rc, char *err, size_t errsz, const char *const *args)
{
    char *argv[16] = {"prog"};
    int argc = 1;
    for (; args && args[argc - 1]; argc++)
        argv[argc] = (char *)args[argc - 1];
    config *c = config_new("prog", "a test program", table, N_TABLE);
    assert_non_null(c);
    err[0] = '\0';
    *rc = config_load(c, argc, argv, err, errsz);
    return c;
}

static void test_defaults(void **state)
{
    (void)state;
    char err[256];
    int rc;
    config *c = load(&rc, err, sizeof err, NULL);
    assert_int_equal(rc, CONFIG_OK);
    assert_string_equal(config_string(c, "test_host"), "localhost");
    assert_int_equal(config_int(c, "test_port"), 9101);
    assert_false(config_bool(c, "test_verbose"));
    assert_true(config_duration(c, "test_timeout") == 30.0);
    assert_int_equal(config_source_of(c, "test_port"), CONFIG_FROM_DEFAULT);
    /* Unknown names and wrong kinds give zero values, not crashes. */
    assert_string_equal(config_string(c, "nope"), "");
    assert_int_equal(config_int(c, "test_host"), 0);
    config_free(c);
}

static void test_precedence(void **state)
{
    (void)state;
    char path[64], err[256];
    write_file(path, "# a comment\n\n test_host = file-host \n"
                     "test_port=1000\ntest_workers = 7\ntest-verbose = yes\ntest_api_key = \" spaced \"\n");
    setenv("CITADEL_TEST_PORT", "2000", 1);
    setenv("CITADEL_TEST_WORKERS", "8", 1);
    setenv("CITADEL_TEST_TIMEOUT", "", 1);   /* empty: unset */
    const char *args[] = {"--config", path, "--test-workers=9", NULL};
    int rc;
    config *c = load(&rc, err, sizeof err, args);
    assert_int_equal(rc, CONFIG_OK);
    assert_string_equal(config_string(c, "test_host"), "file-host");
    assert_int_equal(config_source_of(c, "test_host"), CONFIG_FROM_FILE);
    assert_int_equal(config_int(c, "test_port"), 2000);
    assert_int_equal(config_source_of(c, "test_port"), CONFIG_FROM_ENV);
    assert_int_equal(config_int(c, "test_workers"), 9);
    assert_int_equal(config_source_of(c, "test_workers"), CONFIG_FROM_FLAG);
    assert_true(config_bool(c, "test_verbose"));
    assert_string_equal(config_string(c, "test_api_key"), " spaced ");
    assert_true(config_duration(c, "test_timeout") == 30.0);
    assert_int_equal(config_source_of(c, "test_timeout"), CONFIG_FROM_DEFAULT);
    config_free(c);

    /* The same file through CITADEL_CONFIG; separate-value and bare-bool flags. */
    setenv("CITADEL_CONFIG", path, 1);
    unsetenv("CITADEL_TEST_PORT");
    const char *args2[] = {"--test-host", "flag-host", "--test-verbose", NULL};
    c = load(&rc, err, sizeof err, args2);
    assert_int_equal(rc, CONFIG_OK);
    assert_int_equal(config_int(c, "test_port"), 1000);
    assert_string_equal(config_string(c, "test_host"), "flag-host");
    assert_true(config_bool(c, "test_verbose"));
    config_free(c);
    unlink(path);
}

static void test_help(void **state)
{
    (void)state;
    char err[256];
    const char *args[] = {"--bogus", "--help", NULL};
    int rc;
    config *c = load(&rc, err, sizeof err, args);
    assert_int_equal(rc, CONFIG_HELP);
    char *text = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&text, &len);
    config_print_help(c, m);
    fclose(m);
    assert_non_null(strstr(text, "usage: prog"));
    assert_non_null(strstr(text, "a test program"));
    assert_non_null(strstr(text, "--test-port=N  (env CITADEL_TEST_PORT, default '9101', 1..65535)"));
    assert_non_null(strstr(text, "admin port"));
    assert_non_null(strstr(text, "--test-timeout=DURATION  (env CITADEL_TEST_TIMEOUT, default '30s')"));
    assert_non_null(strstr(text, "--test-verbose=BOOL"));
    assert_non_null(strstr(text, "--test-host=TEXT  (env CITADEL_TEST_HOST, default 'localhost')"));
    assert_non_null(strstr(text, "--test-api-key=TEXT  (env CITADEL_TEST_API_KEY, default '(secret)')"));
    assert_non_null(strstr(text, "CITADEL_CONFIG"));
    assert_null(strstr(text, "dflt-secret-xyz"));
    free(text);
    config_free(c);

    const char *args2[] = {"-h", NULL};
    c = load(&rc, err, sizeof err, args2);
    assert_int_equal(rc, CONFIG_HELP);
    config_free(c);
}

/* Expects loading args to fail with an error containing each of the needles. */
static void expect_error(const char *const *args, const char *n1, const char *n2, const char *absent)
{
    char err[256];
    int rc;
    config *c = load(&rc, err, sizeof err, args);
    assert_int_equal(rc, CONFIG_ERROR);
    if (n1 && !strstr(err, n1)) fail_msg("error '%s' lacks '%s'", err, n1);
    if (n2 && !strstr(err, n2)) fail_msg("error '%s' lacks '%s'", err, n2);
    if (absent && strstr(err, absent)) fail_msg("error '%s' shows '%s'", err, absent);
    config_free(c);
}

static void test_bad_values(void **state)
{
    (void)state;
    expect_error((const char *[]){"--test-port=70000", NULL}, "test_port", "out of range (1..65535)", NULL);
    expect_error((const char *[]){"--test-port=12ab", NULL}, "'12ab' from flag --test-port", "not an integer", NULL);
    expect_error((const char *[]){"--test-verbose=maybe", NULL}, "test_verbose", "not a bool", NULL);
    expect_error((const char *[]){"--test-timeout=5 parsecs", NULL}, "test_timeout", "not a duration", NULL);
    expect_error((const char *[]){"--test-timeout=-1s", NULL}, "test_timeout", "not a duration", NULL);
    setenv("CITADEL_TEST_PORT", "0", 1);
    expect_error(NULL, "'0' from CITADEL_TEST_PORT", "out of range", NULL);
    unsetenv("CITADEL_TEST_PORT");
    /* A secret's value is never echoed, even when it is the bad one. */
    static const config_setting secret_int[] = {{"test_pin", CONFIG_INT, "1234", "pin", 0, 9999, true}};
    config *c = config_new("prog", "", secret_int, 1);
    char *argv[] = {"prog", "--test-pin=hunter2hunter2"};
    char err[256];
    assert_int_equal(config_load(c, 2, argv, err, sizeof err), CONFIG_ERROR);
    assert_non_null(strstr(err, "test_pin"));
    assert_null(strstr(err, "hunter2"));
    config_free(c);
}

static void test_bad_sources(void **state)
{
    (void)state;
    expect_error((const char *[]){"--no-such-flag=1", NULL}, "unknown flag '--no-such-flag'", NULL, NULL);
    expect_error((const char *[]){"stray", NULL}, "unexpected argument 'stray'", NULL, NULL);
    expect_error((const char *[]){"--test-host", NULL}, "needs a value", NULL, NULL);
    expect_error((const char *[]){"--config=/nonexistent/citadel.conf", NULL}, "/nonexistent/citadel.conf", NULL, NULL);
    char path[64];
    write_file(path, "test_host = a\n# fine\nmystery = 3\n");
    const char *args[] = {"--config", path, NULL};
    expect_error(args, "line 3", "unknown setting 'mystery'", NULL);
    unlink(path);
    write_file(path, "test_host\n");
    expect_error(args, "line 1", "expected 'name = value'", NULL);
    unlink(path);
    write_file(path, "test_port = 99999\n");
    expect_error(args, "test_port", "line 1", NULL);
    unlink(path);
}

static void test_durations(void **state)
{
    (void)state;
    static const struct { const char *text; double seconds; } cases[] = {
        {"250ms", 0.25}, {"1.5s", 1.5}, {"2m", 120}, {"1h", 3600}, {"42", 42}, {"0", 0},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        char flag[64], err[256];
        snprintf(flag, sizeof flag, "--test-timeout=%s", cases[k].text);
        const char *args[] = {flag, NULL};
        int rc;
        config *c = load(&rc, err, sizeof err, args);
        assert_int_equal(rc, CONFIG_OK);
        assert_true(config_duration(c, "test_timeout") == cases[k].seconds);
        config_free(c);
    }
}

static void test_print_masks_secrets(void **state)
{
    (void)state;
    char err[256];
    setenv("CITADEL_TEST_API_KEY", "sk-very-secret-value", 1);
    int rc;
    config *c = load(&rc, err, sizeof err, (const char *[]){"--test-port=8080", NULL});
    assert_int_equal(rc, CONFIG_OK);
    assert_string_equal(config_string(c, "test_api_key"), "sk-very-secret-value");
    char *text = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&text, &len);
    config_print(c, m);
    fclose(m);
    assert_non_null(strstr(text, "test_port = 8080  (flag --test-port)"));
    assert_non_null(strstr(text, "test_api_key = (secret)  (CITADEL_TEST_API_KEY)"));
    assert_non_null(strstr(text, "test_host = localhost  (default)"));
    assert_null(strstr(text, "sk-very-secret-value"));
    free(text);
    config_free(c);
}

static void test_env_name(void **state)
{
    (void)state;
    char buf[64];
    assert_string_equal(config_env_name("admin_port", buf, sizeof buf), "CITADEL_ADMIN_PORT");
    assert_string_equal(config_env_name("router-frontend", buf, sizeof buf), "CITADEL_ROUTER_FRONTEND");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_defaults, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_precedence, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_help, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_bad_values, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_bad_sources, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_durations, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_print_masks_secrets, clear_env, clear_env),
        cmocka_unit_test_setup_teardown(test_env_name, clear_env, clear_env),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
