/* test_tokenizer.c - the tokenizers (kernels/tokenizer/tokenizer.h) against independent
 * references: llama.cpp's SentencePiece tokenizations of stories260K (tests/data, from
 * shared/golden) and Hugging Face `tokenizers` on SmolLM2's BPE vocabulary
 * (tests/data/smollm2-tokenize.jsonl, made by make_smollm2_tokenize.py; skipped, with a
 * message, when var/models/ lacks the model), including the gpt2, llama3 and qwen2
 * pre-tokenizers run over SmolLM2's vocabulary (smollm2-pre-tokenize.jsonl). Also
 * decoding, the streaming detokenizer's UTF-8 handling, small hand-made vocabularies,
 * refusals of broken ones, and a guard against quadratic encoding.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "json_min.h"
#include "tokenizer/tokenizer.h"

#define STORIES "tests/data/models/stories260K.gguf"
#ifndef SMOLLM2  /* -DSMOLLM2=\"elsewhere\" to try the skip path */
#define SMOLLM2 "var/models/SmolLM2-135M-Instruct.Q4_1.gguf"
#endif

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

/* Every line of a reference file whose "pre" is `pre` (lines without one when pre is
 * NULL): the text ("prompt" or "text") encodes to its ids. Returns the lines checked. */
static int check_reference_pre(const tokenizer *t, const char *path, bool parse_special, const char *pre)
{
    FILE *in = fopen(path, "r");
    assert_non_null(in);
    static char line[1 << 16];
    int lines = 0;
    while (fgets(line, sizeof line, in)) {
        json_value *j = json_parse(line);
        assert_non_null(j);
        const json_value *line_pre = json_get(j, "pre");
        if ((line_pre == NULL) != (pre == NULL) || (pre && strcmp(line_pre->string, pre))) {
            json_free(j);
            continue;
        }
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

static int check_reference(const tokenizer *t, const char *path, bool parse_special)
{
    return check_reference_pre(t, path, parse_special, NULL);
}

/* Writes w to a fresh temporary file (its path into path) and frees w. */
static void save_temp(gguf_writer *w, char path[32])
{
    strcpy(path, "/tmp/citadel_tok_XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    char err[256];
    if (gguf_writer_save(w, path, err, sizeof err)) fail_msg("%s", err);
    gguf_writer_free(w);
}

/* tokenizer_load over the file w describes; returns its result, the tokenizer in *t. */
static int load_written(gguf_writer *w, tokenizer **t, char *err, size_t errsz)
{
    char path[32];
    save_temp(w, path);
    gguf_file *f;
    assert_int_equal(gguf_open(&f, path, err, errsz), 0);
    int rc = tokenizer_load(t, f, err, errsz);
    gguf_close(f);  /* the tokenizer copies what it needs */
    unlink(path);
    return rc;
}

/* True when s[0..n) is well-formed UTF-8 (what the streaming detokenizer promises). */
static bool valid_utf8(const char *s, int n)
{
    const uint8_t *u = (const uint8_t *)s;
    for (int i = 0; i < n;) {
        int need = u[i] < 0x80 ? 1 : u[i] >= 0xc2 && u[i] < 0xe0 ? 2 : u[i] >= 0xe0 && u[i] < 0xf0 ? 3
                 : u[i] >= 0xf0 && u[i] < 0xf5 ? 4 : 0;
        if (need == 0 || i + need > n) return false;
        uint32_t cp = need == 1 ? u[i] : u[i] & (0x7f >> need);
        for (int j = 1; j < need; j++) {
            if ((u[i + j] & 0xc0) != 0x80) return false;
            cp = (cp << 6) | (u[i + j] & 0x3f);
        }
        static const uint32_t least[5] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < least[need] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
        i += need;
    }
    return true;
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

/* Every reference text without special tokens decodes back to itself, token by token
 * and through the streaming detokenizer (whose every piece is valid UTF-8). */
static void test_bpe_round_trip(void **state)
{
    (void)state;
    if (!have_smollm2()) return;
    loaded l = load(SMOLLM2);
    FILE *in = fopen("tests/data/smollm2-tokenize.jsonl", "r");
    assert_non_null(in);
    static char line[1 << 16];
    int checked = 0;
    while (fgets(line, sizeof line, in)) {
        json_value *j = json_parse(line);
        const json_value *text = json_get(j, "text");
        if (strstr(text->string, "<|") == NULL) {
            int32_t ids[1024];
            int n = tokenizer_encode(l.t, text->string, text->string_len, false, false, ids, 1024);
            char plain[4096], streamed[4096];
            int wp = 0, ws = 0;
            detok_stream s = {0};
            for (int k = 0; k < n; k++) {
                wp += tokenizer_token_bytes(l.t, ids[k], false, plain + wp, (int)sizeof plain - wp);
                int w = detok_stream_push(&s, l.t, ids[k], streamed + ws, 64);
                assert_true(valid_utf8(streamed + ws, w));
                ws += w;
            }
            ws += detok_stream_flush(&s, streamed + ws, 64);
            assert_int_equal(s.n_tokens, n);
            assert_int_equal(wp, (int)text->string_len);
            assert_memory_equal(plain, text->string, text->string_len);
            assert_int_equal(ws, (int)text->string_len);
            assert_memory_equal(streamed, text->string, text->string_len);
            checked++;
        }
        json_free(j);
    }
    fclose(in);
    assert_true(checked >= 55);
    unload(l);
}

/* NUL-terminated copies of a string array, for the writer. */
static char **copy_strings(const gguf_value *a)
{
    char **out = calloc(a->v.arr.n, sizeof *out);
    for (uint64_t i = 0; i < a->v.arr.n; i++) {
        out[i] = strndup(a->v.arr.strings[i].ptr, a->v.arr.strings[i].len);
        assert_non_null(out[i]);
    }
    return out;
}

static void free_strings(char **s, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++)
        free(s[i]);
    free(s);
}

/* SmolLM2's vocabulary and merges under another tokenizer.ggml.pre. */
static tokenizer *smollm2_with_pre(const char *pre)
{
    char err[256];
    gguf_file *f;
    if (gguf_open(&f, SMOLLM2, err, sizeof err)) fail_msg("%s", err);
    const gguf_value *tokens = gguf_get_array(f, "tokenizer.ggml.tokens");
    const gguf_value *merges = gguf_get_array(f, "tokenizer.ggml.merges");
    const gguf_value *types = gguf_get_array(f, "tokenizer.ggml.token_type");
    char **tok = copy_strings(tokens), **mer = copy_strings(merges);
    int32_t *ty = malloc(sizeof *ty * types->v.arr.n);
    for (uint64_t i = 0; i < types->v.arr.n; i++)
        ty[i] = (int32_t)gguf_array_i64(types, i);
    gguf_writer *w = gguf_writer_create();
    gguf_writer_add_str(w, "tokenizer.ggml.model", "gpt2");
    gguf_writer_add_str(w, "tokenizer.ggml.pre", pre);
    gguf_writer_add_str_array(w, "tokenizer.ggml.tokens", (const char *const *)tok, tokens->v.arr.n);
    gguf_writer_add_str_array(w, "tokenizer.ggml.merges", (const char *const *)mer, merges->v.arr.n);
    gguf_writer_add_i32_array(w, "tokenizer.ggml.token_type", ty, types->v.arr.n);
    free_strings(tok, tokens->v.arr.n);
    free_strings(mer, merges->v.arr.n);
    free(ty);
    gguf_close(f);
    tokenizer *t;
    if (load_written(w, &t, err, sizeof err)) fail_msg("%s", err);
    return t;
}

static void test_other_pre_tokenizers(void **state)
{
    (void)state;
    if (!have_smollm2()) return;
    const char *pres[] = {"gpt2", "llama3", "qwen2"};
    for (size_t i = 0; i < 3; i++) {
        tokenizer *t = smollm2_with_pre(pres[i]);
        assert_true(check_reference_pre(t, "tests/data/smollm2-pre-tokenize.jsonl", true, pres[i]) >= 15);
        tokenizer_free(t);
    }
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

/* Pushes each byte of bytes[0..n) as its <0xNN> token; returns what came out. */
static int push_bytes(const tokenizer *t, detok_stream *s, const char *bytes, int n, char *out, int cap)
{
    int w = 0;
    for (int i = 0; i < n; i++) {
        char piece[8];
        snprintf(piece, sizeof piece, "<0x%02X>", (uint8_t)bytes[i]);
        w += detok_stream_push(s, t, tokenizer_find_piece(t, piece), out + w, cap - w);
    }
    return w;
}

/* Overlong forms, surrogates, bytes past U+10FFFF and a character cut by the next
 * token's ASCII come out as U+FFFD, the rest of the text intact; a full buffer never
 * receives half a character. */
static void test_detok_stream_invalid(void **state)
{
    (void)state;
    loaded l = load(STORIES);
    struct {
        const char *in, *out;
    } cases[] = {
        {"\xc0\x80" "a", "\xef\xbf\xbd\xef\xbf\xbd" "a"},
        {"\xed\xa0\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
        {"\xf5\xf4\x90\x80\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
        {"\xe6\x97x\xc3\xa9", "\xef\xbf\xbd\xef\xbf\xbd" "x\xc3\xa9"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        detok_stream s = {0};
        char out[128];
        int w = push_bytes(l.t, &s, cases[i].in, (int)strlen(cases[i].in), out, sizeof out);
        w += detok_stream_flush(&s, out + w, (int)sizeof out - w);
        assert_int_equal(w, (int)strlen(cases[i].out));
        assert_memory_equal(out, cases[i].out, (size_t)w);
        assert_true(valid_utf8(out, w));
    }
    detok_stream s = {0};
    char out[8];
    assert_int_equal(push_bytes(l.t, &s, "\xf0\x9f\x98\x80", 4, out, 3), 0);  /* 4 bytes do not fit in 3 */
    assert_int_equal(s.n_pending, 0);
    unload(l);
}

/* Ids outside the vocabulary are refused by every lookup and stream nothing. */
static void test_ids_out_of_range(void **state)
{
    (void)state;
    loaded l = load(STORIES);
    int32_t bad[] = {-1, 512, INT32_MAX};
    for (size_t i = 0; i < 3; i++) {
        char buf[16];
        assert_null(tokenizer_piece(l.t, bad[i]));
        assert_int_equal(tokenizer_token_bytes(l.t, bad[i], true, buf, 16), -1);
        assert_false(tokenizer_is_eog(l.t, bad[i]));
        assert_false(tokenizer_is_control(l.t, bad[i]));
        detok_stream s = {0};
        assert_int_equal(detok_stream_push(&s, l.t, bad[i], buf, 16), 0);
    }
    assert_int_equal(tokenizer_find_piece(l.t, "no such piece"), -1);
    unload(l);
}

/* A SentencePiece vocabulary of a few pieces: merges follow the scores, a character
 * with no piece and no byte token becomes <unk> (or is dropped when there is none),
 * user-defined tokens are matched even without parse_special and decode as text. */
static gguf_writer *tiny_spm(bool with_unk)
{
    const char *tokens[] = {"<unk>", "<s>", "</s>", "\xe2\x96\x81", "a", "b", "\xe2\x96\x81" "a", "ab",
                            "\xe2\x96\x81" "ab", "<tool>"};
    float scores[] = {0, 0, 0, -5, -6, -6, -2, -1, -3, 0};
    int32_t types[] = {2, 3, 3, 1, 1, 1, 1, 1, 1, 4};
    gguf_writer *w = gguf_writer_create();
    gguf_writer_add_str(w, "tokenizer.ggml.model", "llama");
    gguf_writer_add_str_array(w, "tokenizer.ggml.tokens", tokens, 10);
    gguf_writer_add_f32_array(w, "tokenizer.ggml.scores", scores, 10);
    gguf_writer_add_i32_array(w, "tokenizer.ggml.token_type", types, 10);
    gguf_writer_add_u32(w, "tokenizer.ggml.bos_token_id", 1);
    gguf_writer_add_u32(w, "tokenizer.ggml.eos_token_id", 2);
    if (with_unk) gguf_writer_add_u32(w, "tokenizer.ggml.unknown_token_id", 0);
    return w;
}

static void test_tiny_spm(void **state)
{
    (void)state;
    char err[256];
    tokenizer *t;
    assert_int_equal(load_written(tiny_spm(true), &t, err, sizeof err), 0);
    int32_t ids[16];
    /* "▁ab" wins over "▁a"+"b": "ab" (-1) merges before "▁a" (-2), then "▁"+"ab" -> "▁ab" */
    assert_int_equal(tokenizer_encode(t, "ab", 2, true, false, ids, 16), 2);
    assert_int_equal(ids[0], 1);
    assert_int_equal(ids[1], 8);
    assert_int_equal(tokenizer_encode(t, "a c<tool>", 9, false, false, ids, 16), 4);
    int32_t want[] = {6, 3, 0, 9};  /* ▁a ▁ <unk> <tool> */
    assert_memory_equal(ids, want, sizeof want);
    char buf[16];
    assert_int_equal(tokenizer_token_bytes(t, 9, false, buf, 16), 6);  /* user-defined: its text */
    assert_int_equal(tokenizer_token_bytes(t, 0, false, buf, 16), 0);  /* <unk>: nothing, as llama.cpp */
    assert_true(tokenizer_is_eog(t, 2));
    assert_false(tokenizer_is_eog(t, 1));
    tokenizer_free(t);

    assert_int_equal(load_written(tiny_spm(false), &t, err, sizeof err), 0);
    int n = tokenizer_encode(t, "c", 1, false, false, ids, 16);
    for (int i = 0; i < n; i++)
        assert_true(ids[i] >= 0 && ids[i] < tokenizer_n_vocab(t));
    tokenizer_free(t);
}

/* A byte-level BPE vocabulary where the pre-tokenizers disagree visibly: digit runs
 * (gpt2 whole, llama3 three at a time, qwen2 and smollm one at a time) and llama3's
 * ignore_merges (a word that is a piece is taken whole, though no merge builds it). */
static void test_tiny_bpe_pre(void **state)
{
    (void)state;
    const char *tokens[] = {"1", "2", "3", "4", "12", "123", "1234", "\xc4\xa0", "a", "aa"};
    const char *merges[] = {"1 2", "12 3", "123 4"};
    struct {
        const char *pre;
        int n;
        int32_t ids[8];
    } cases[] = {
        {"gpt2", 4, {8, 8, 7, 6}},
        {"llama3", 4, {9, 7, 5, 3}},
        {"qwen2", 7, {8, 8, 7, 0, 1, 2, 3}},
        {"smollm", 7, {8, 8, 7, 0, 1, 2, 3}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        gguf_writer *w = gguf_writer_create();
        gguf_writer_add_str(w, "tokenizer.ggml.model", "gpt2");
        gguf_writer_add_str(w, "tokenizer.ggml.pre", cases[i].pre);
        gguf_writer_add_str_array(w, "tokenizer.ggml.tokens", tokens, 10);
        gguf_writer_add_str_array(w, "tokenizer.ggml.merges", merges, 3);
        char err[256];
        tokenizer *t;
        if (load_written(w, &t, err, sizeof err)) fail_msg("%s", err);
        int32_t ids[16];
        int n = tokenizer_encode(t, "aa 1234", 7, false, false, ids, 16);
        if (n != cases[i].n || memcmp(ids, cases[i].ids, sizeof *ids * (size_t)n))
            fail_msg("pre '%s': %d ids, first %d", cases[i].pre, n, n > 0 ? ids[0] : -1);
        tokenizer_free(t);
    }
}

/* A long input (256 KB) encodes whole. Its speed is not asserted here (tests do not
 * time things); a regression to n^2 would show as this test taking minutes. */
static void test_long_text(void **state)
{
    (void)state;
    size_t len = 256 * 1024;
    char *text = malloc(len);
    for (size_t i = 0; i < len; i++)
        text[i] = "lorem ipsum dolor sit amet, consectetur\n"[i % 40];
    const char *paths[] = {STORIES, SMOLLM2};
    for (size_t p = 0; p < 2; p++) {
        if (p == 1 && !have_smollm2()) break;
        loaded l = load(paths[p]);
        int32_t *ids = malloc(sizeof *ids * len);
        int n = tokenizer_encode(l.t, text, len, false, false, ids, (int)len);
        assert_true(n > 1000 && n <= (int)len);
        free(ids);
        unload(l);
    }
    free(text);
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

    const char *pieces[] = {"a", "b"};
    w = gguf_writer_create();
    gguf_writer_add_str(w, "tokenizer.ggml.model", "gpt2");
    gguf_writer_add_str_array(w, "tokenizer.ggml.tokens", pieces, 2);
    assert_int_equal(load_written(w, &t, err, sizeof err), -1);
    assert_null(t);
    assert_non_null(strstr(err, "tokenizer.ggml.merges"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spm_reference),
        cmocka_unit_test(test_spm_round_trip),
        cmocka_unit_test(test_bpe_reference),
        cmocka_unit_test(test_bpe_round_trip),
        cmocka_unit_test(test_other_pre_tokenizers),
        cmocka_unit_test(test_detok_stream_utf8),
        cmocka_unit_test(test_detok_stream_invalid),
        cmocka_unit_test(test_ids_out_of_range),
        cmocka_unit_test(test_tiny_spm),
        cmocka_unit_test(test_tiny_bpe_pre),
        cmocka_unit_test(test_long_text),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
