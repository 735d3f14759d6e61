/* test_tokenizer.c - the tokenizers (kernels/tokenizer/tokenizer.h) against independent
 * references: llama.cpp's SentencePiece tokenizations of stories260K (tests/data, from
 * shared/golden) and Hugging Face `tokenizers` on SmolLM2's BPE vocabulary
 * (tests/data/smollm2-tokenize.jsonl, made by make_smollm2_tokenize.py; skipped, with a
 * message, when var/models/ lacks the model). Also decoding, the streaming
 * detokenizer's UTF-8 handling, and refusals of broken vocabularies.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "json_min.h"
#include "tokenizer/tokenizer.h"

#define STORIES "tests/data/models/stories260K.gguf"
#define SMOLLM2 "var/models/SmolLM2-135M-Instruct.Q4_1.gguf"

typedef struct loaded {
    gguf_file *f;
    tokenizer *t;
} loaded;

static loaded load(const char *path)
{
    loaded l = {0};
    char err[256];
    if (gguf_open(&l.f, path, err, sizeof err)) fail_msg("%s: %s", path, err);
    if (tokenizer_load(&l.t, l.f, err, sizeof err)) fail_msg("%s: %s", path, err);
    return l;
}

static void unload(loaded l)
{
    tokenizer_free(l.t);
    gguf_close(l.f);
}

/* Every line of a reference file: the text ("prompt" or "text") encodes to its ids. */
static int check_reference(const tokenizer *t, const char *path, bool parse_special)
{
    FILE *in = fopen(path, "r");
    assert_non_null(in);
    static char line[1 << 16];
    int lines = 0;
    while (fgets(line, sizeof line, in)) {
        json_value *j = json_parse(line);
        assert_non_null(j);
        const json_value *text = json_get(j, "prompt") ? json_get(j, "prompt") : json_get(j, "text");
        const json_value *ids = json_get(j, "prompt_ids") ? json_get(j, "prompt_ids") : json_get(j, "ids");
        const json_value *bos = json_get(j, "add_bos");
        int32_t got[1024];
        int n = tokenizer_encode(t, text->string, text->string_len, bos && bos->number != 0, parse_special,
                                 got, 1024);
        assert_int_equal(n, (int)ids->n);
        for (int i = 0; i < n; i++)
            if (got[i] != (int32_t)ids->items[i]->number)
                fail_msg("'%s': id %d is %d, reference %d", text->string, i, got[i],
                         (int)ids->items[i]->number);
        json_free(j);
        lines++;
    }
    fclose(in);
    return lines;
}

static void test_spm_reference(void **state)
{
    (void)state;
    loaded l = load(STORIES);
    assert_true(check_reference(l.t, "tests/data/stories260K-tokenize.jsonl", false) >= 7);
    assert_int_equal(check_reference(l.t, "tests/data/stories260K-generate-shared.jsonl", false), 4);
    assert_int_equal(tokenizer_n_vocab(l.t), 512);
    assert_int_equal(tokenizer_bos(l.t), 1);
    assert_true(tokenizer_adds_bos(l.t));
    assert_true(tokenizer_is_eog(l.t, tokenizer_eos(l.t)));
    unload(l);
}

/* Decoding the tokens gives the text back (SentencePiece adds one leading space). */
static void test_spm_round_trip(void **state)
{
    (void)state;
    loaded l = load(STORIES);
    const char *texts[] = {"Once upon a time, there was a cat.", "tabs\tnew\nlines", "ünïcödé ✓ 日本"};
    for (size_t i = 0; i < 3; i++) {
        int32_t ids[512];
        int n = tokenizer_encode(l.t, texts[i], strlen(texts[i]), false, false, ids, 512);
        char out[1024];
        int w = 0;
        for (int k = 0; k < n; k++)
            w += tokenizer_token_bytes(l.t, ids[k], false, out + w, (int)sizeof out - w);
        assert_true(w >= 1 && out[0] == ' ');
        assert_int_equal(w - 1, (int)strlen(texts[i]));
        assert_memory_equal(out + 1, texts[i], strlen(texts[i]));
    }
    /* a too-small buffer: the count tells the caller how much to allocate */
    int32_t few[2];
    int n = tokenizer_encode(l.t, texts[0], strlen(texts[0]), true, false, few, 2);
    assert_true(n > 2);
    assert_int_equal(tokenizer_token_bytes(l.t, 99999, false, NULL, 0), -1);
    unload(l);
}

static bool have_smollm2(void)
{
    if (access(SMOLLM2, R_OK) == 0) return true;
    fprintf(stderr, "SKIPPED: %s is absent (run `make model`); the SmolLM2 tokenizer checks did not run\n",
            SMOLLM2);
    return false;
}

static void test_bpe_reference(void **state)
{
    (void)state;
    if (!have_smollm2()) return;
    loaded l = load(SMOLLM2);
    assert_true(check_reference(l.t, "tests/data/smollm2-tokenize.jsonl", true) >= 60);
    int32_t end = tokenizer_find_piece(l.t, "<|im_end|>");
    assert_true(end >= 0);
    assert_true(tokenizer_is_eog(l.t, end));
    assert_true(tokenizer_is_control(l.t, end));
    assert_false(tokenizer_adds_bos(l.t));
    /* without parse_special, control-token text is ordinary text */
    int32_t ids[64];
    int n = tokenizer_encode(l.t, "<|im_end|>", 10, false, false, ids, 64);
    assert_true(n > 1);
    char buf[64];
    assert_int_equal(tokenizer_token_bytes(l.t, end, false, buf, 64), 0);
    assert_int_equal(tokenizer_token_bytes(l.t, end, true, buf, 64), 10);
    unload(l);
}

/* An emoji whose bytes arrive one token at a time comes out whole, once complete. */
static void test_detok_stream_utf8(void **state)
{
    (void)state;
    loaded l = load(STORIES);
    const char emoji[] = "\xf0\x9f\x98\x80";
    detok_stream s = {0};
    char out[64];
    for (int i = 0; i < 3; i++) {
        char piece[8];
        snprintf(piece, sizeof piece, "<0x%02X>", (uint8_t)emoji[i]);
        int32_t id = tokenizer_find_piece(l.t, piece);
        assert_true(id >= 0);
        assert_int_equal(detok_stream_push(&s, l.t, id, out, 64), 0);
    }
    snprintf(out, sizeof out, "<0x%02X>", (uint8_t)emoji[3]);
    int32_t last = tokenizer_find_piece(l.t, out);
    assert_int_equal(detok_stream_push(&s, l.t, last, out, 64), 4);
    assert_memory_equal(out, emoji, 4);
    /* a lone continuation byte is invalid: U+FFFD, not held forever */
    int32_t stray = tokenizer_find_piece(l.t, "<0x80>");
    int w = detok_stream_push(&s, l.t, stray, out, 64);
    assert_int_equal(w, 3);
    assert_memory_equal(out, "\xef\xbf\xbd", 3);
    /* an incomplete character at the end of the stream is flushed as U+FFFD */
    assert_int_equal(detok_stream_push(&s, l.t, tokenizer_find_piece(l.t, "<0xE6>"), out, 64), 0);
    assert_int_equal(detok_stream_flush(&s, out, 64), 3);
    assert_int_equal(detok_stream_flush(&s, out, 64), 0);
    unload(l);
}

static void test_refusals(void **state)
{
    (void)state;
    gguf_writer *w = gguf_writer_create();
    gguf_writer_add_str(w, "tokenizer.ggml.model", "llama");
    char path[] = "/tmp/citadel_tok_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    char err[256];
    assert_int_equal(gguf_writer_save(w, path, err, sizeof err), 0);
    gguf_writer_free(w);
    gguf_file *f;
    assert_int_equal(gguf_open(&f, path, err, sizeof err), 0);
    tokenizer *t = (tokenizer *)1;
    assert_int_equal(tokenizer_load(&t, f, err, sizeof err), -1);
    assert_null(t);
    assert_non_null(strstr(err, "tokenizer.ggml.tokens"));
    gguf_close(f);

    w = gguf_writer_create();
    gguf_writer_add_str(w, "tokenizer.ggml.model", "wordpiece");
    assert_int_equal(gguf_writer_save(w, path, err, sizeof err), 0);
    gguf_writer_free(w);
    assert_int_equal(gguf_open(&f, path, err, sizeof err), 0);
    assert_int_equal(tokenizer_load(&t, f, err, sizeof err), -1);
    assert_non_null(strstr(err, "wordpiece"));
    gguf_close(f);
    unlink(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spm_reference),
        cmocka_unit_test(test_spm_round_trip),
        cmocka_unit_test(test_bpe_reference),
        cmocka_unit_test(test_detok_stream_utf8),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
