/* test_stream_filter.c - sanitizing streamed output (common/stream_filter.h):
 *   - texts holding every kind of finding, cut into two chunks at every position, three
 *     chunks at many, and fed byte by byte: what is released, concatenated, equals the
 *     one-shot sanitize_text result, with the same counts;
 *   - a blocked term cut at every position blocks the stream, and none of its bytes
 *     (nor anything after it) is ever released;
 *   - only what may still change is held: plain prose goes out at once, a trailing
 *     half UTF-8 character or digit run waits.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "stream_filter.h"

static sanitizer *san;

static const char *const texts[] = {
    "call 13812345678 now",
    "13812345678",
    "mail bob.smith@example.com, card 4111 1111 1111 1111; id 11010519491231002X.",
    "ip 192.168.1.10 and fe80::1ff:fe23:4567:890a end",
    "Bearer eyJhbGciOiJIUzI1NiJ9.abcdefgh sk-abcdefghijklmnopqrstuvwxyz123456 AKIAIOSFODNN7EXAMPLE",
    "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIB\n-----END EC PRIVATE KEY-----\n",
    "not 999.1.1.1 nor 4111111111111112 nor 110105194912310021 but 中文 13912345678",
    "\xff\xfe 13812345678\xc3 \xe2\x82",
};

static int setup(void **state)
{
    (void)state;
    char err[256];
    const char *terms[] = {"forbidden plan", "机密"};
    size_t lens[] = {strlen(terms[0]), strlen(terms[1])};
    san = sanitizer_new_with_terms(NULL, ac_build(terms, lens, 2, err, sizeof err), err, sizeof err);
    return san ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    sanitizer_free(san);
    return 0;
}

typedef struct streamed {
    pii_buf text;
    unsigned counts[SANITIZE_FINDING_COUNT];
    bool blocked;
} streamed;

static void push(stream_filter *f, const char *p, size_t n, bool final, streamed *out)
{
    sanitize_result r;
    assert_int_equal(stream_filter_push(f, p, n, final, &r), 0);
    pii_buf_append(&out->text, r.text.data ? r.text.data : "", r.text.len);
    for (int k = 0; k < SANITIZE_FINDING_COUNT; k++) out->counts[k] += r.counts[k];
    out->blocked |= r.blocked;
    sanitize_result_free(&r);
}

/* Feeds text cut at the given positions (ascending, within the text). */
static streamed run(const char *text, const size_t *cuts, size_t n_cuts)
{
    streamed out = {0};
    pii_buf_append(&out.text, "", 0);
    stream_filter *f = stream_filter_new(san, SANITIZE_OUTPUT);
    size_t at = 0, len = strlen(text);
    for (size_t i = 0; i < n_cuts; i++) {
        push(f, text + at, cuts[i] - at, false, &out);
        at = cuts[i];
    }
    push(f, text + at, len - at, true, &out);
    stream_filter_free(f);
    return out;
}

static void check_equal(const char *text, const streamed *got, const char *where)
{
    sanitize_result want;
    assert_int_equal(sanitize_text(san, SANITIZE_OUTPUT, text, strlen(text), &want), 0);
    const char *w = want.text.data ? want.text.data : "";
    if (strcmp(got->text.data, w)) fail_msg("%s of \"%s\": got \"%s\", want \"%s\"", where, text, got->text.data, w);
    assert_memory_equal(got->counts, want.counts, sizeof want.counts);
    assert_false(got->blocked);
    sanitize_result_free(&want);
}

static void test_every_split(void **state)
{
    (void)state;
    for (size_t t = 0; t < sizeof texts / sizeof texts[0]; t++) {
        size_t len = strlen(texts[t]);
        for (size_t cut = 0; cut <= len; cut++) {
            streamed s = run(texts[t], &cut, 1);
            check_equal(texts[t], &s, "two chunks");
            pii_buf_free(&s.text);
        }
        for (size_t a = 1; a < len; a += 3)
            for (size_t b = a; b < len; b += 5) {
                size_t cuts[2] = {a, b};
                streamed s = run(texts[t], cuts, 2);
                check_equal(texts[t], &s, "three chunks");
                pii_buf_free(&s.text);
            }
        size_t *bytes = malloc(len * sizeof *bytes);
        for (size_t i = 0; i < len; i++) bytes[i] = i;
        streamed s = run(texts[t], bytes, len);
        check_equal(texts[t], &s, "byte by byte");
        pii_buf_free(&s.text);
        free(bytes);
    }
}

static void test_blocked_term_split(void **state)
{
    (void)state;
    const char *texts_blocked[] = {"the FORBIDDEN PLAN is 13812345678", "这是机密文件 a@b.com"};
    const char *needles[] = {"FORBIDDEN", "机"};
    for (int t = 0; t < 2; t++) {
        const char *text = texts_blocked[t];
        for (size_t cut = 0; cut <= strlen(text); cut++) {
            streamed s = run(text, &cut, 1);
            assert_true(s.blocked);
            assert_int_equal(s.counts[SANITIZE_BLOCKED_TERM], 1);
            assert_null(strstr(s.text.data, needles[t]));
            assert_null(strstr(s.text.data, "1381"));
            assert_true(strlen(s.text.data) <= (size_t)(strstr(text, needles[t]) - text));
            pii_buf_free(&s.text);
        }
    }
}

static void test_holds_only_what_may_change(void **state)
{
    (void)state;
    stream_filter *f = stream_filter_new(san, SANITIZE_OUTPUT);
    sanitize_result r;
    assert_int_equal(stream_filter_push(f, "Hello there, ", 13, false, &r), 0);
    assert_string_equal(r.text.data, "Hello there, ");
    assert_int_equal(stream_filter_held(f), 0);
    sanitize_result_free(&r);
    assert_int_equal(stream_filter_push(f, "call 138", 8, false, &r), 0);
    assert_string_equal(r.text.data, "call ");       /* the digits may become a phone */
    sanitize_result_free(&r);
    assert_int_equal(stream_filter_push(f, "12345678 \xe4\xb8", 11, false, &r), 0);
    assert_string_equal(r.text.data, "[PHONE] ");    /* half a character waits */
    sanitize_result_free(&r);
    assert_int_equal(stream_filter_push(f, "\xad forbidden pl", 14, false, &r), 0);
    assert_string_equal(r.text.data, "\xe4\xb8\xad ");
    sanitize_result_free(&r);
    assert_int_equal(stream_filter_push(f, "ace", 3, true, &r), 0);
    assert_string_equal(r.text.data ? r.text.data : "", "forbidden place");
    assert_true(stream_filter_done(f));
    sanitize_result_free(&r);
    assert_int_equal(stream_filter_push(f, "more", 4, false, &r), 0);
    assert_int_equal(r.text.len, 0);
    sanitize_result_free(&r);
    stream_filter_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_split),
        cmocka_unit_test(test_blocked_term_split),
        cmocka_unit_test(test_holds_only_what_may_change),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
