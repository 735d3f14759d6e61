/* test_train_data.c - fine-tuning data sets (common/train_data.h): both line formats,
 * bad lines reported by number and skipped, the bad-share limit, exact duplicates
 * dropped, PII redacted through the sanitizer, a seeded split that holds out at least
 * one example.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "train_data.h"

typedef struct bad_log {
    int lines[16];
    int n;
} bad_log;

static void on_bad(int line, const char *why, void *user)
{
    bad_log *b = user;
    assert_non_null(why);
    if (b->n < 16) b->lines[b->n++] = line;
}

static const char *good =
    "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"},{\"role\":\"assistant\",\"content\":\"hello\"}]}\n"
    "{\"prompt\":\"2+2=\",\"completion\":\"4\"}\n"
    "\n"
    "{\"prompt\":\"2+2=\",\"completion\":\"4\"}\n"
    "{\"prompt\":\"mail me\",\"completion\":\"at bob@example.com\"}\n"
    "{\"prompt\":\"3+3=\",\"completion\":\"6\"}\n";

static void test_formats_duplicates_split(void **state)
{
    (void)state;
    train_data_options opt = {.max_bad_share = 0.1, .val_share = 0.25, .seed = 1};
    train_dataset d;
    char err[256];
    bad_log bad = {{0}, 0};
    assert_int_equal(train_data_parse(&d, good, strlen(good), &opt, on_bad, &bad, err, sizeof err), 0);
    assert_int_equal(d.n_lines, 5);      /* the blank line is not counted */
    assert_int_equal(d.n_duplicates, 1);
    assert_int_equal(d.n_bad, 0);
    assert_int_equal(d.n_train + d.n_val, 4);
    assert_int_equal(d.n_val, 1);
    int chats = 0;
    for (int i = 0; i < d.n_train; i++) chats += d.train[i].n_msgs == 2;
    for (int i = 0; i < d.n_val; i++) chats += d.val[i].n_msgs == 2;
    assert_int_equal(chats, 1);
    train_dataset_free(&d);
}

static void test_sanitizer_redacts(void **state)
{
    (void)state;
    char err[256];
    sanitizer *s = sanitizer_new(NULL, NULL, err, sizeof err);
    assert_non_null(s);
    train_data_options opt = {.max_bad_share = 0.1, .val_share = 0, .seed = 1, .sanitizer = s};
    train_dataset d;
    assert_int_equal(train_data_parse(&d, good, strlen(good), &opt, NULL, NULL, err, sizeof err), 0);
    assert_int_equal(d.n_redacted, 1);
    assert_int_equal(d.n_val, 0);
    bool found = false;
    for (int i = 0; i < d.n_train; i++)
        if (d.train[i].completion && strstr(d.train[i].completion, "[EMAIL]")) found = true;
    for (int i = 0; i < d.n_train; i++)
        assert_null(d.train[i].completion ? strstr(d.train[i].completion, "bob@") : NULL);
    assert_true(found);
    train_dataset_free(&d);
    sanitizer_free(s);
}

static void test_bad_lines(void **state)
{
    (void)state;
    const char *text =
        "{\"prompt\":\"a\",\"completion\":\"b\"}\n"
        "{\"prompt\":\"a\",\"completion\":\n"                                  /* 2: broken JSON */
        "[1,2]\n"                                                              /* 3: not an object */
        "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}\n"             /* 4: no assistant */
        "{\"messages\":[{\"role\":\"robot\",\"content\":\"x\"}]}\n"            /* 5: bad role */
        "{\"prompt\":\"a\",\"completion\":\"\"}\n"                             /* 6: empty */
        "{\"prompt\":\"c\",\"completion\":\"d\"}\n";
    train_data_options opt = {.max_bad_share = 0.8, .val_share = 0.1, .seed = 1};
    train_dataset d;
    char err[256];
    bad_log bad = {{0}, 0};
    assert_int_equal(train_data_parse(&d, text, strlen(text), &opt, on_bad, &bad, err, sizeof err), 0);
    assert_int_equal(bad.n, 5);
    for (int i = 0; i < 5; i++) assert_int_equal(bad.lines[i], i + 2);
    assert_int_equal(d.n_train + d.n_val, 2);
    train_dataset_free(&d);
    opt.max_bad_share = 0.5;   /* 5 of 7 is too many now */
    assert_int_equal(train_data_parse(&d, text, strlen(text), &opt, NULL, NULL, err, sizeof err), -1);
    assert_non_null(strstr(err, "5 of 7 lines are bad"));
    assert_int_equal(train_data_parse(&d, "\n\n", 2, &opt, NULL, NULL, err, sizeof err), -1);
    assert_non_null(strstr(err, "no usable example"));
    assert_int_equal(train_data_load(&d, "/nonexistent/x.jsonl", &opt, NULL, NULL, err, sizeof err), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_formats_duplicates_split),
        cmocka_unit_test(test_sanitizer_redacts),
        cmocka_unit_test(test_bad_lines),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
