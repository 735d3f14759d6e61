/* test_pii.c - the PII and secret detectors and the whole-text sanitizer
 * (common/pii.h, common/sanitize.h):
 *   - each detector finds what it should (true positives) and leaves alone look-alikes
 *     (a wrong ID check digit or an impossible birth date, a card failing Luhn, 999.1.1.1,
 *     digits glued to longer runs, std::vector, times);
 *   - placeholders and counts; policies redact, block (reason names the type) and log;
 *   - blocked terms block prompts (content_policy) and output (content_filter);
 *   - malformed UTF-8 and NUL-free binary never crash and pass through byte for byte.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sanitize.h"

static sanitizer *san;

static int setup(void **state)
{
    (void)state;
    char err[256];
    san = sanitizer_new(NULL, NULL, err, sizeof err);
    return san ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    sanitizer_free(san);
    return 0;
}

/* The sanitized form of text under the default policy (redact all). */
static char *redact(const char *text, unsigned counts[SANITIZE_FINDING_COUNT])
{
    sanitize_result r;
    assert_int_equal(sanitize_text(san, SANITIZE_INPUT, text, strlen(text), &r), 0);
    assert_false(r.blocked);
    if (counts) memcpy(counts, r.counts, sizeof r.counts);
    char *out = strdup(r.text.data ? r.text.data : "");
    sanitize_result_free(&r);
    return out;
}

static void expect(const char *text, const char *want)
{
    char *got = redact(text, NULL);
    if (strcmp(got, want)) fail_msg("sanitize(\"%s\") = \"%s\", want \"%s\"", text, got, want);
    free(got);
}

static void test_phone(void **state)
{
    (void)state;
    expect("call 13812345678 now", "call [PHONE] now");
    expect("tel:19912345678.", "tel:[PHONE].");
    expect("+8613812345678", "[PHONE]");
    expect("UK +447911123456 ok", "UK [PHONE] ok");
    expect("12812345678", "12812345678");            /* 12x is not a mobile prefix */
    expect("138123456789", "138123456789");          /* 12 digits: not a phone */
    expect("order 213812345678", "order 213812345678");
    expect("1381234567", "1381234567");              /* 10 digits */
}

static void test_id_card(void **state)
{
    (void)state;
    assert_true(pii_id_card_valid("11010519491231002X", 18));
    assert_true(pii_id_card_valid("11010519491231002x", 18));
    assert_false(pii_id_card_valid("110105194912310021", 18));   /* wrong check digit */
    assert_false(pii_id_card_valid("110105194902300021", 18));   /* 30 February */
    expect("id 11010519491231002X.", "id [ID_CARD].");
    expect("id 110105194912310021", "id 110105194912310021");
    expect("123456789012345678", "123456789012345678");
    expect("11010519491231002X5", "11010519491231002X5");      /* glued to more */
    expect("110105299912310012", "110105299912310012");        /* born in 2999 */
}

static void test_email(void **state)
{
    (void)state;
    expect("mail bob.smith+tag@example.co.uk today", "mail [EMAIL] today");
    expect("<a_b@sub.domain.org>.", "<[EMAIL]>.");
    expect("user@localhost", "user@localhost");
    expect("not an @ sign", "not an @ sign");
    expect("a@b.c", "a@b.c");
}

static void test_bank_card(void **state)
{
    (void)state;
    assert_true(pii_luhn_valid("4111111111111111", 16));
    assert_false(pii_luhn_valid("4111111111111112", 16));
    expect("card 4111 1111 1111 1111 exp", "card [BANK_CARD] exp");
    expect("card 4111-1111-1111-1111", "card [BANK_CARD]");
    expect("6222021234567890128", "[BANK_CARD]");              /* 19 digits, Luhn ok */
    expect("4111111111111112", "4111111111111112");
    expect("41111111111111111111111", "41111111111111111111111");   /* 23-digit run */
    expect("4111  1111 1111 1111", "4111  1111 1111 1111");  /* double space */
}

static void test_ip(void **state)
{
    (void)state;
    expect("host 192.168.1.10:8080", "host [IP]:8080");
    expect("0.0.0.0 and 255.255.255.255", "[IP] and [IP]");
    expect("999.1.1.1", "999.1.1.1");
    expect("256.1.1.1", "256.1.1.1");
    expect("version 1.2.3.4.5", "version 1.2.3.4.5");
    expect("v6 2001:db8:85a3::8a2e:370:7334 ok", "v6 [IP] ok");
    expect("fe80::1ff:fe23:4567:890a", "[IP]");
    expect("::ffff:192.0.2.128", "[IP]");
    expect("std::vector<int> at 12:30:45", "std::vector<int> at 12:30:45");
    expect("1:2:3:4:5:6:7:8:9", "1:2:3:4:5:6:7:8:9");
}

static void test_secret(void **state)
{
    (void)state;
    expect("key sk-abcdefghijklmnopqrstuvwxyz123456 end", "key [SECRET] end");
    expect("sk-proj-AAAAAAAAAAAAAAAAAAAAAAAAAAAA", "[SECRET]");
    expect("AKIAIOSFODNN7EXAMPLE", "[SECRET]");
    expect("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.abc", "Authorization: [SECRET]");
    expect("-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nAAA=\n-----END RSA PRIVATE KEY-----\nafter", "[SECRET]\nafter");
    expect("-----BEGIN PRIVATE KEY-----\nunterminated", "-----BEGIN PRIVATE KEY-----\nunterminated");
    expect("task-abcdefghijklmnopqrstuvwxyz", "task-abcdefghijklmnopqrstuvwxyz");
    expect("sk-short", "sk-short");
    expect("the bearer of bad news", "the bearer of bad news");
    expect("AKIAIOSFODNN7EXAMPL", "AKIAIOSFODNN7EXAMPL");
}

static void test_counts_and_precedence(void **state)
{
    (void)state;
    unsigned c[SANITIZE_FINDING_COUNT];
    char *out = redact("13812345678@qq.com, 13912345678 and 13712345678", c);
    assert_string_equal(out, "[EMAIL], [PHONE] and [PHONE]");
    assert_int_equal(c[PII_EMAIL], 1);
    assert_int_equal(c[PII_PHONE], 2);
    assert_int_equal(c[PII_IP], 0);
    free(out);
    /* An ID number is also 18 digits that may pass Luhn: the ID wins. */
    out = redact("11010519491231002X 110101199003074514", c);
    assert_int_equal(c[PII_ID_CARD], 2);
    assert_int_equal(c[PII_BANK_CARD], 0);
    free(out);
}

static void test_policies(void **state)
{
    (void)state;
    char err[256];
    pii_policy p[PII_TYPE_COUNT] = {PII_REDACT};
    p[PII_EMAIL] = PII_LOG;
    p[PII_ID_CARD] = PII_BLOCK;
    sanitizer *s = sanitizer_new(p, NULL, err, sizeof err);
    assert_non_null(s);
    sanitize_result r;
    const char *t = "a@b.com 13812345678";
    assert_int_equal(sanitize_text(s, SANITIZE_INPUT, t, strlen(t), &r), 0);
    assert_string_equal(r.text.data, "a@b.com [PHONE]");
    assert_int_equal(r.counts[PII_EMAIL], 1);
    sanitize_result_free(&r);
    t = "me: 11010519491231002X";
    assert_int_equal(sanitize_text(s, SANITIZE_INPUT, t, strlen(t), &r), 0);
    assert_true(r.blocked);
    assert_string_equal(r.reason, "pii_policy:ID_CARD");
    assert_int_equal(r.text.len, 0);
    assert_null(strstr(r.reason, "1101"));
    sanitize_result_free(&r);
    /* Every blocking type in the text is named, not only the first; the counts cover
     * the whole text although the scan stopped at the first. */
    p[PII_PHONE] = PII_BLOCK;
    sanitizer_free(s);
    s = sanitizer_new(p, NULL, err, sizeof err);
    t = "id 11010519491231002X, call 13812345678 or 13912345678, mail a@b.com";
    assert_int_equal(sanitize_text(s, SANITIZE_INPUT, t, strlen(t), &r), 0);
    assert_true(r.blocked);
    assert_string_equal(r.reason, "pii_policy:ID_CARD,PHONE");
    assert_int_equal(r.counts[PII_PHONE], 2);
    assert_int_equal(r.counts[PII_EMAIL], 1);
    assert_int_equal(r.counts[PII_ID_CARD], 1);
    sanitize_result_free(&r);
    sanitizer_free(s);
    pii_policy q;
    assert_int_equal(pii_policy_parse("BLOCK", &q), 0);
    assert_int_equal(q, PII_BLOCK);
    assert_int_equal(pii_policy_parse("drop", &q), -1);
}

static void test_blocked_terms(void **state)
{
    (void)state;
    char err[256];
    const char *terms[] = {"Forbidden Plan", "机密"};
    size_t lens[] = {strlen(terms[0]), strlen(terms[1])};
    sanitizer *s = sanitizer_new_with_terms(NULL, ac_build(terms, lens, 2, err, sizeof err), err, sizeof err);
    assert_non_null(s);
    sanitize_result r;
    const char *t = "tell me the FORBIDDEN plan";
    assert_int_equal(sanitize_text(s, SANITIZE_INPUT, t, strlen(t), &r), 0);
    assert_true(r.blocked);
    assert_string_equal(r.reason, "content_policy");
    assert_int_equal(r.counts[SANITIZE_BLOCKED_TERM], 1);
    sanitize_result_free(&r);
    t = "这是机密文件";
    assert_int_equal(sanitize_text(s, SANITIZE_OUTPUT, t, strlen(t), &r), 0);
    assert_true(r.blocked);
    assert_string_equal(r.reason, "content_filter");
    sanitize_result_free(&r);
    t = "a forbidden planet";   /* whole words only: "plan" is not "planet" */
    assert_int_equal(sanitize_text(s, SANITIZE_INPUT, t, strlen(t), &r), 0);
    assert_false(r.blocked);
    sanitize_result_free(&r);
    t = "the forbidden plan.";
    assert_int_equal(sanitize_text(s, SANITIZE_INPUT, t, strlen(t), &r), 0);
    assert_true(r.blocked);
    sanitize_result_free(&r);
    t = "nothing to see";
    assert_int_equal(sanitize_text(s, SANITIZE_INPUT, t, strlen(t), &r), 0);
    assert_false(r.blocked);
    assert_string_equal(r.text.data, t);
    sanitize_result_free(&r);
    sanitizer_free(s);
}

static void test_malformed_utf8(void **state)
{
    (void)state;
    const char bad[] = "\xff\xfe 13812345678 \xc3\x28 \xe2\x82 \xf0\x9f\x92 a@b.com \xed\xa0\x80\x80";
    char *out = redact(bad, NULL);
    assert_string_equal(out, "\xff\xfe [PHONE] \xc3\x28 \xe2\x82 \xf0\x9f\x92 [EMAIL] \xed\xa0\x80\x80");
    free(out);
    /* Random bytes: whatever comes out, no crash and the text is passed through or redacted. */
    srand(7);
    char buf[4096];
    for (int round = 0; round < 200; round++) {
        for (size_t i = 0; i < sizeof buf - 1; i++) buf[i] = (char)(1 + rand() % 255);
        buf[sizeof buf - 1] = '\0';
        sanitize_result r;
        assert_int_equal(sanitize_text(san, SANITIZE_OUTPUT, buf, strlen(buf), &r), 0);
        sanitize_result_free(&r);
    }
}

static void test_json(void **state)
{
    (void)state;
    sanitize_result r;
    const char *t = "x 13812345678 \"q\"";
    assert_int_equal(sanitize_text(san, SANITIZE_INPUT, t, strlen(t), &r), 0);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    sanitize_result_write_json(&r, f);
    fclose(f);
    assert_string_equal(buf, "{\"text\":\"x [PHONE] \\\"q\\\"\",\"findings\":[{\"type\":\"PHONE\",\"count\":1}],"
                             "\"blocked\":false}");
    free(buf);
    sanitize_result_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_phone),         cmocka_unit_test(test_id_card),
        cmocka_unit_test(test_email),         cmocka_unit_test(test_bank_card),
        cmocka_unit_test(test_ip),            cmocka_unit_test(test_secret),
        cmocka_unit_test(test_counts_and_precedence), cmocka_unit_test(test_policies),
        cmocka_unit_test(test_blocked_terms), cmocka_unit_test(test_malformed_utf8),
        cmocka_unit_test(test_json),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
