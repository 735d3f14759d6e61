/* test_aho_corasick.c - the blocked-term automaton (common/aho_corasick.h):
 *   - finds every term as a whole word (word boundaries at ASCII letters and digits),
 *     overlapping terms and terms that are suffixes of others;
 *   - Latin letters match in any case, other UTF-8 byte for byte;
 *   - 10,000 terms: each one is found inside a text, and a text holding none is clean;
 *   - the state carries across chunks, and ac_depth is what a stream must hold;
 *   - term files (CRLF, comments, blank lines), malformed input, NULL and empty lists.
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

#include "aho_corasick.h"

static ac_automaton *build(const char *const *terms, size_t n)
{
    size_t lens[64];
    char err[256];
    for (size_t i = 0; i < n; i++) lens[i] = strlen(terms[i]);
    ac_automaton *a = ac_build(terms, lens, n, err, sizeof err);
    assert_non_null(a);
    return a;
}

static size_t count(const ac_automaton *a, const char *text) { return ac_count(a, text, strlen(text)); }

static void test_basic(void **state)
{
    (void)state;
    const char *terms[] = {"he", "she", "his", "hers"};
    ac_automaton *a = build(terms, 4);
    assert_int_equal(ac_term_count(a), 4);
    assert_int_equal(ac_max_term_len(a), 4);
    assert_int_equal(count(a, "she, he and his; hers."), 4);
    assert_int_equal(count(a, "ushers"), 0);      /* inside a word: no whole-word term */
    assert_int_equal(count(a, "xyz"), 0);
    ac_state st = AC_START;
    size_t end, mlen;
    /* "he" is known at the boundary after it: the space at offset 5. */
    assert_true(ac_feed(a, &st, "so he said", 10, &end, &mlen));
    assert_int_equal(end, 5);
    assert_int_equal(mlen, 2);
    assert_false(ac_feed(a, &st, "so he said" + 5, 5, &end, &mlen));
    ac_free(a);
}

/* Word boundaries: a term with ASCII letters or digits at an edge matches only where
 * the text does not continue the word there; other bytes are boundaries. */
static void test_word_boundaries(void **state)
{
    (void)state;
    const char *terms[] = {"ass", "bad word", "caf", "机密", "x!"};
    ac_automaton *a = build(terms, 5);
    assert_int_equal(count(a, "class"), 0);
    assert_int_equal(count(a, "assign"), 0);
    assert_int_equal(count(a, "a glass, an assassin"), 0);
    assert_int_equal(count(a, "ass1 or 1ass"), 0);        /* digits are word bytes */
    assert_int_equal(count(a, "an ass."), 1);
    assert_int_equal(count(a, "ASS"), 1);
    assert_int_equal(count(a, "my_ass-ok"), 1);           /* '_' and '-' are boundaries */
    assert_int_equal(count(a, "用ass的"), 1);              /* next to Chinese */
    assert_int_equal(count(a, "a bad word!"), 1);
    assert_int_equal(count(a, "bad words"), 0);
    assert_int_equal(count(a, "badword"), 0);
    assert_int_equal(count(a, "cafÃ©"), 1);          /* accents are boundaries (documented) */
    assert_int_equal(count(a, "绝对机密文件"), 1);           /* non-Latin terms match anywhere */
    assert_int_equal(count(a, "ax!"), 0);
    assert_int_equal(count(a, "a x!y"), 1);               /* ends with '!': no boundary needed after */
    ac_free(a);
}

static void test_case_and_utf8(void **state)
{
    (void)state;
    const char *terms[] = {"Secret Project", "机密", "Ölpreis"};
    ac_automaton *a = build(terms, 3);
    assert_int_equal(count(a, "the SECRET PROJECT is"), 1);
    assert_int_equal(count(a, "the secret project"), 1);
    assert_int_equal(count(a, "绝对机密"), 1);
    assert_int_equal(count(a, "Ölpreis"), 1);
    assert_int_equal(count(a, "ölpreis"), 0);       /* only A-Z fold */
    assert_int_equal(count(a, "机"), 0);
    ac_free(a);
}

static void test_malformed_input(void **state)
{
    (void)state;
    const char *terms[] = {"\xe6\x9c\xba\xe5\xaf\x86", "abc"};
    ac_automaton *a = build(terms, 2);
    unsigned char buf[65536];
    srand(3);
    for (size_t i = 0; i < sizeof buf; i++) buf[i] = (unsigned char)rand();
    (void)ac_count(a, buf, sizeof buf);
    assert_int_equal(ac_count(a, "\xff\xe6\x9c\xba\xe5\xaf\x86\x80", 8), 1);
    assert_int_equal(ac_count(NULL, "abc", 3), 0);
    ac_free(a);
}

/* 10,000 distinct terms: every one found where planted, none in a clean text. */
static void test_ten_thousand(void **state)
{
    (void)state;
    enum { N = 10000 };
    char (*words)[16] = malloc(N * sizeof *words);
    const char **terms = malloc(N * sizeof *terms);
    size_t *lens = malloc(N * sizeof *lens);
    for (int i = 0; i < N; i++) {
        snprintf(words[i], sizeof words[i], "zq%dX%d", i, i % 7);
        terms[i] = words[i];
        lens[i] = strlen(words[i]);
    }
    char err[256];
    ac_automaton *a = ac_build(terms, lens, N, err, sizeof err);
    assert_non_null(a);
    assert_int_equal(ac_term_count(a), N);
    for (int i = 0; i < N; i += 37) {
        char text[64];
        snprintf(text, sizeof text, "before ZQ%dx%d after", i, i % 7);
        assert_int_equal(ac_count(a, text, strlen(text)), 1);
    }
    const char *clean = "nothing here matches zq or x, not even zq12345 alone";
    assert_int_equal(ac_count(a, clean, strlen(clean)), 0);
    ac_free(a);
    free(words);
    free(terms);
    free(lens);
}

static void test_chunks_and_depth(void **state)
{
    (void)state;
    const char *terms[] = {"forbidden"};
    ac_automaton *a = build(terms, 1);
    ac_state st = AC_START;
    size_t end, mlen;
    assert_false(ac_feed(a, &st, "this is forb", 12, &end, &mlen));
    assert_int_equal(ac_depth(a, st), 4);
    assert_true(ac_feed(a, &st, "idden!", 6, &end, &mlen));
    assert_int_equal(end, 5);
    assert_int_equal(mlen, 9);
    /* A chunk ending with the term: held whole (it may go on as "forbiddenness"),
     * found at the next chunk's first byte (end 0) or at the end of the text. */
    st = AC_START;
    assert_false(ac_feed(a, &st, "is forbidden", 12, &end, &mlen));
    assert_int_equal(ac_depth(a, st), 9);
    ac_state copy = st;
    assert_true(ac_feed(a, &st, " here", 5, &end, &mlen));
    assert_int_equal(end, 0);
    assert_int_equal(mlen, 9);
    assert_true(ac_finish(a, &copy, &mlen));
    assert_int_equal(mlen, 9);
    st = AC_START;
    assert_false(ac_feed(a, &st, "forbiddenness", 13, &end, &mlen));
    assert_false(ac_finish(a, &st, &mlen));
    ac_free(a);
}

static void test_file(void **state)
{
    (void)state;
    char path[] = "/tmp/citadel-terms-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char *body = "# comment\r\nalpha\r\n\nbeta gamma\n机密";
    assert_int_equal(write(fd, body, strlen(body)), (ssize_t)strlen(body));
    close(fd);
    char err[256];
    ac_automaton *a = ac_load_file(path, err, sizeof err);
    unlink(path);
    assert_non_null(a);
    assert_int_equal(ac_term_count(a), 3);
    assert_int_equal(count(a, "ALPHA and Beta Gamma and 机密"), 3);
    assert_int_equal(count(a, "comment"), 0);
    ac_free(a);
    assert_null(ac_load_file("/nonexistent/terms.txt", err, sizeof err));
    assert_non_null(strstr(err, "/nonexistent/terms.txt"));
    ac_automaton *empty = ac_build(NULL, NULL, 0, err, sizeof err);
    assert_non_null(empty);
    assert_int_equal(count(empty, "anything"), 0);
    ac_free(empty);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_basic),       cmocka_unit_test(test_word_boundaries), cmocka_unit_test(test_case_and_utf8),
        cmocka_unit_test(test_malformed_input), cmocka_unit_test(test_ten_thousand),
        cmocka_unit_test(test_chunks_and_depth), cmocka_unit_test(test_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
