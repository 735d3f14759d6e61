/* test_audit_log.c - the hash-chained audit log (common/audit_log.h):
 *   - records appended over several days land in daily segments and verify; the chain
 *     runs across segments;
 *   - an edited byte, a removed record, two swapped records, a record moved to another
 *     segment and a forged anchor are each reported (verify returns 1 naming the line);
 *   - reopening finds the head (seq, hash, Kafka offsets: redeliveries are known) and
 *     cuts off a torn last line, after which the chain goes on intact;
 *   - retention removes segments older than the cutoff (never the newest), writes the
 *     anchor, and verify still passes; appending after it continues the chain.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "audit_log.h"

#define DAY 86400
static const time_t T0 = 1764000000;   /* 2025-11-24T16:00:00Z */

static char dir[256];

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/test_audit_log.XXXXXX");
    assert_non_null(mkdtemp(dir));
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
    return 0;
}

/* Appends n records at time t, Kafka offsets from *offset on. */
static void append_n(audit_log *l, int n, time_t t, int64_t *offset)
{
    char err[256], fields[128];
    for (int i = 0; i < n; i++) {
        int len = snprintf(fields, sizeof fields, "\"request_id\":\"r-%lld\",\"status\":200", (long long)*offset);
        assert_int_equal(audit_log_append(l, fields, (size_t)len, t, 0, (*offset)++, err, sizeof err), 0);
    }
    assert_int_equal(audit_log_sync(l, err, sizeof err), 0);
}

/* Three days of 10 records each. */
static void make_log(void)
{
    audit_log l;
    char err[256];
    int64_t off = 0;
    assert_int_equal(audit_log_open(&l, dir, err, sizeof err), 0);
    for (int d = 0; d < 3; d++)
        append_n(&l, 10, T0 + d * DAY, &off);
    audit_log_close(&l);
}

static char *segment_path(const char *day)
{
    static char p[400];
    snprintf(p, sizeof p, "%s/audit-%s.jsonl", dir, day);
    return p;
}

/* Rewrites a segment's lines through fn. */
static void rewrite(const char *day, void (*fn)(char **lines, int *n))
{
    char *lines[64];
    int n = 0;
    FILE *f = fopen(segment_path(day), "r");
    assert_non_null(f);
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) > 0 && n < 64)
        lines[n++] = strdup(line);
    free(line);
    fclose(f);
    fn(lines, &n);
    f = fopen(segment_path(day), "w");
    for (int i = 0; i < n; i++) {
        fputs(lines[i], f);
        free(lines[i]);
    }
    fclose(f);
}

static void edit_fourth(char **l, int *n) { (void)n; char *p = strstr(l[3], "\"status\":200"); p[10] = '1'; }
static void drop_fifth(char **l, int *n) { free(l[4]); memmove(&l[4], &l[5], (size_t)(*n - 5) * sizeof *l); (*n)--; }
static void swap_2_3(char **l, int *n) { (void)n; char *t = l[1]; l[1] = l[2]; l[2] = t; }

static void verify_expect_problem(const char *fragment)
{
    audit_verify_result r;
    assert_int_equal(audit_log_verify(dir, &r), 1);
    if (strstr(r.problem, fragment) == NULL)
        fail_msg("problem '%s' lacks '%s'", r.problem, fragment);
}

static void test_days_and_verify(void **state)
{
    (void)state;
    make_log();
    char **names;
    int n = audit_log_segments(dir, &names);
    assert_int_equal(n, 3);
    assert_string_equal(names[0], "audit-2025-11-24.jsonl");
    assert_string_equal(names[2], "audit-2025-11-26.jsonl");
    audit_log_free_names(names, n);
    audit_verify_result r;
    assert_int_equal(audit_log_verify(dir, &r), 0);
    assert_int_equal(r.records, 30);
    assert_int_equal(r.first_seq, 1);
    assert_int_equal(r.last_seq, 30);
    assert_int_equal(r.segments, 3);
}

static void test_edit_detected(void **state)
{
    (void)state;
    make_log();
    rewrite("2025-11-25", edit_fourth);
    verify_expect_problem("audit-2025-11-25.jsonl line 4: record seq 14 was edited");
}

static void test_removal_detected(void **state)
{
    (void)state;
    make_log();
    rewrite("2025-11-25", drop_fifth);
    verify_expect_problem("audit-2025-11-25.jsonl line 5: record seq 16 where seq 15 belongs");
}

static void test_swap_detected(void **state)
{
    (void)state;
    make_log();
    rewrite("2025-11-26", swap_2_3);
    verify_expect_problem("audit-2025-11-26.jsonl line 2: record seq 23 where seq 22 belongs");
}

static void test_whole_segment_removed_detected(void **state)
{
    (void)state;
    make_log();
    assert_int_equal(unlink(segment_path("2025-11-25")), 0);
    verify_expect_problem("audit-2025-11-26.jsonl line 1: record seq 21 where seq 11 belongs");
}

static void test_reopen_finds_head_and_cuts_torn_line(void **state)
{
    (void)state;
    make_log();
    FILE *f = fopen(segment_path("2025-11-26"), "a");
    fputs("{\"seq\":31,\"prev\":\"abc", f);   /* a crash in the middle of a write */
    fclose(f);
    audit_log l;
    char err[256];
    assert_int_equal(audit_log_open(&l, dir, err, sizeof err), 0);
    assert_int_equal(l.seq, 30);
    assert_true(audit_log_has(&l, 0, 29));
    assert_false(audit_log_has(&l, 0, 30));
    assert_false(audit_log_has(&l, 1, 0));
    int64_t off = 30;
    append_n(&l, 5, T0 + 2 * DAY, &off);
    audit_log_close(&l);
    audit_verify_result r;
    assert_int_equal(audit_log_verify(dir, &r), 0);
    assert_int_equal(r.records, 35);
}

static void test_retention_keeps_chain_verifiable(void **state)
{
    (void)state;
    make_log();
    char err[256];
    /* Cutoff = day 3 - 1 day = 2025-11-25: only 2025-11-24 is older. */
    assert_int_equal(audit_log_apply_retention(dir, T0 + 2 * DAY, 1, err, sizeof err), 1);
    audit_verify_result r;
    assert_int_equal(audit_log_verify(dir, &r), 0);
    assert_int_equal(r.first_seq, 11);
    assert_int_equal(r.records, 20);
    /* Far in the future: everything is old, but the newest segment (the head) stays. */
    assert_int_equal(audit_log_apply_retention(dir, T0 + 400 * DAY, 180, err, sizeof err), 1);
    assert_int_equal(audit_log_verify(dir, &r), 0);
    assert_int_equal(r.first_seq, 21);
    /* The chain goes on from its head. */
    audit_log l;
    assert_int_equal(audit_log_open(&l, dir, err, sizeof err), 0);
    int64_t off = 30;
    append_n(&l, 3, T0 + 3 * DAY, &off);
    audit_log_close(&l);
    assert_int_equal(audit_log_verify(dir, &r), 0);
    assert_int_equal(r.last_seq, 33);
    /* Removing a kept segment by hand is still caught against the anchor. */
    assert_int_equal(unlink(segment_path("2025-11-26")), 0);
    verify_expect_problem("record seq 31 where seq 21 belongs");
}

static void test_forged_anchor_detected(void **state)
{
    (void)state;
    make_log();
    char err[256];
    assert_int_equal(audit_log_apply_retention(dir, T0 + 2 * DAY, 1, err, sizeof err), 1);
    char path[400];
    snprintf(path, sizeof path, "%s/%s", dir, AUDIT_ANCHOR_FILE);
    FILE *f = fopen(path, "w");
    fprintf(f, "{\"seq\":11,\"prev\":\"%064d\"}\n", 0);
    fclose(f);
    verify_expect_problem("line 1: record seq 11 does not follow the record before it");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_days_and_verify, setup, teardown),
        cmocka_unit_test_setup_teardown(test_edit_detected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_removal_detected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_swap_detected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_whole_segment_removed_detected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reopen_finds_head_and_cuts_torn_line, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retention_keeps_chain_verifiable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_forged_anchor_detected, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
