/* fuzz_sanitize.c - libFuzzer harness for the sanitizer (common/sanitize.h,
 * stream_filter.h, pii.h, aho_corasick.h): any bytes, malformed UTF-8 included, are
 * sanitized whole and streamed in chunks whose sizes come from the input; nothing may
 * crash, and when nothing blocks, the streamed text must equal the one-shot text.
 *   make fuzz && build/fuzz/fuzz_sanitize tests/fuzz/corpus/
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "stream_filter.h"

static sanitizer *san;

static void init(void)
{
    char err[256];
    const char *terms[] = {"forbidden", "\xe6\x9c\xba\xe5\xaf\x86", "Secret Plan"};
    size_t lens[] = {9, 6, 11};
    san = sanitizer_new_with_terms(NULL, ac_build(terms, lens, 3, err, sizeof err), err, sizeof err);
    if (san == NULL) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (san == NULL) init();
    char *text = malloc(size + 1);
    memcpy(text, data, size);
    text[size] = '\0';
    size_t len = strlen(text);   /* the wire carries NUL-free strings */
    sanitize_result whole;
    sanitize_text(san, SANITIZE_OUTPUT, text, len, &whole);
    stream_filter *f = stream_filter_new(san, SANITIZE_OUTPUT);
    pii_buf got = {0};
    bool blocked = false;
    size_t step = size ? 1 + data[0] % 17 : 1;
    for (size_t at = 0;;) {
        size_t n = len - at < step ? len - at : step;
        sanitize_result r;
        stream_filter_push(f, text + at, n, at + n == len, &r);
        pii_buf_append(&got, r.text.data ? r.text.data : "", r.text.len);
        blocked |= r.blocked;
        sanitize_result_free(&r);
        if ((at += n) == len) break;
    }
    if (!blocked && !whole.blocked && (got.len != whole.text.len || memcmp(got.data, whole.text.data, got.len)))
        abort();
    pii_buf_free(&got);
    stream_filter_free(f);
    sanitize_result_free(&whole);
    free(text);
    return 0;
}
