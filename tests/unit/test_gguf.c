/* test_gguf.c - the GGUF reader and writer (kernels/gguf/gguf.h):
 *   - a file written with every value type the writer has, and tensors of several
 *     types and ranks, reads back equal, in insertion order, with aligned tensor data;
 *   - value types the writer lacks (hand-built here), v2 files, nested arrays and the
 *     lookups' conversions behave as gguf.h promises;
 *   - tests/data/models/stories260K.gguf reads with its known keys and shapes;
 *   - every truncation of a small file, and each kind of corruption (bad magic, version,
 *     counts, lengths, types, dims, offsets, overlaps, alignment, duplicates), is refused
 *     with a message naming the problem, without a read out of bounds (buffers here are
 *     allocated to their exact size so AddressSanitizer sees any over-read);
 *   - the writer refuses what the reader would refuse and reports it at save.
 * Runs from the repository root.
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

#include "gguf/gguf.h"

#define STORIES "tests/data/models/stories260K.gguf"

/* ---- helpers: temp files and a byte builder for hand-made files ------------------- */

static void temp_path(char *path, size_t n)
{
    snprintf(path, n, "/tmp/citadel_test_gguf_XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
}

static uint8_t *read_whole(const char *path, size_t *size)
{
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    uint8_t *p = malloc((size_t)n);
    assert_non_null(p);
    assert_int_equal(fread(p, 1, (size_t)n, fp), (size_t)n);
    fclose(fp);
    *size = (size_t)n;
    return p;
}

struct fb {
    uint8_t *p;
    size_t len, cap;
};

static void fb_bytes(struct fb *b, const void *d, size_t n)
{
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        assert_non_null(b->p);
    }
    memcpy(b->p + b->len, d, n);
    b->len += n;
}

static void fb_le(struct fb *b, uint64_t v, size_t n)
{
    uint8_t t[8];
    for (size_t i = 0; i < n; i++)
        t[i] = (uint8_t)(v >> (8 * i));
    fb_bytes(b, t, n);
}

static void fb_u32(struct fb *b, uint32_t v) { fb_le(b, v, 4); }
static void fb_u64(struct fb *b, uint64_t v) { fb_le(b, v, 8); }

static void fb_str(struct fb *b, const char *s)
{
    fb_u64(b, strlen(s));
    fb_bytes(b, s, strlen(s));
}

static void fb_zeros(struct fb *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        fb_le(b, 0, 1);
}

static void fb_pad(struct fb *b, size_t align)
{
    fb_zeros(b, (align - b->len % align) % align);
}

static void fb_header(struct fb *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv)
{
    fb_bytes(b, "GGUF", 4);
    fb_u32(b, version);
    fb_u64(b, n_tensors);
    fb_u64(b, n_kv);
}

static void fb_key(struct fb *b, const char *key, enum gguf_value_type t)
{
    fb_str(b, key);
    fb_u32(b, t);
}

static void fb_tensor(struct fb *b, const char *name, uint32_t n_dims, const uint64_t *ne,
                      uint32_t type, uint64_t offset)
{
    fb_str(b, name);
    fb_u32(b, n_dims);
    for (uint32_t d = 0; d < n_dims; d++)
        fb_u64(b, ne[d]);
    fb_u32(b, type);
    fb_u64(b, offset);
}

/* Parses exactly `len` bytes of p from an exact-size copy. */
static int parse_exact(gguf_file **f, const uint8_t *p, size_t len, char *err, size_t errsz)
{
    uint8_t *copy = malloc(len ? len : 1);
    assert_non_null(copy);
    if (len)
        memcpy(copy, p, len);
    int rc = gguf_parse(f, copy, len, err, errsz);
    if (rc == 0)
        gguf_close(*f);   /* the copy dies here: close before anyone uses the result */
    free(copy);
    return rc;
}

static void expect_refused(const struct fb *b, const char *needle)
{
    char err[256] = "untouched";
    gguf_file *f = (gguf_file *)1;
    int rc = parse_exact(&f, b->p, b->len, err, sizeof err);
    if (rc == 0)
        fail_msg("file accepted; expected an error mentioning '%s'", needle);
    assert_null(f);
    if (strstr(err, needle) == NULL)
        fail_msg("error '%s' does not mention '%s'", err, needle);
}

static void expect_accepted(const struct fb *b)
{
    char err[256] = "";
    gguf_file *f = NULL;
    if (parse_exact(&f, b->p, b->len, err, sizeof err) != 0)
        fail_msg("refused: %s", err);
}

/* A valid v3 file: one kv, two F32 tensors "a" (8) and "b" (4x2) back to back. */
static void fb_valid(struct fb *b, uint64_t a_off, uint64_t b_off, uint32_t b_type)
{
    static const uint64_t ne_a[] = {8}, ne_b[] = {4, 2};
    fb_header(b, 3, 2, 1);
    fb_key(b, "general.architecture", GGUF_TYPE_STRING);
    fb_str(b, "llama");
    fb_tensor(b, "a", 1, ne_a, TENSOR_F32, a_off);
    fb_tensor(b, "b", 2, ne_b, b_type, b_off);
    fb_pad(b, 32);
    fb_zeros(b, 64);
}

/* ---- round trip ------------------------------------------------------------------- */

static const char *const vocab[] = {"<unk>", "", "hello", "w\xc3\xb6rld"};
static const float scores[] = {0.0f, -1.5f, 3.25f, 1e30f};
static const int32_t types[] = {2, -7, 1, 2147483647};

static void write_everything(const char *path, float *f32, uint8_t *q8, uint16_t *f16)
{
    gguf_writer *w = gguf_writer_create();
    assert_non_null(w);
    gguf_writer_add_str(w, "general.architecture", "llama");
    gguf_writer_add_u32(w, "u32", 4000000000u);
    gguf_writer_add_i32(w, "i32", -123456);
    gguf_writer_add_f32(w, "f32", 0.5f);
    gguf_writer_add_f32(w, "f32.whole", 3.0f);
    gguf_writer_add_bool(w, "yes", true);
    gguf_writer_add_bool(w, "no", false);
    gguf_writer_add_str(w, "empty", "");
    gguf_writer_add_str_array(w, "tokens", vocab, 4);
    gguf_writer_add_f32_array(w, "scores", scores, 4);
    gguf_writer_add_i32_array(w, "types", types, 4);
    gguf_writer_add_i32_array(w, "none", NULL, 0);
    for (int i = 0; i < 6 * 5; i++)
        f32[i] = (float)i * 0.25f - 3.0f;
    for (int i = 0; i < 34 * 3; i++)
        q8[i] = (uint8_t)(i * 7 + 1);
    for (int i = 0; i < 2 * 3 * 4; i++)
        f16[i] = (uint16_t)(0x3c00 + i);
    gguf_writer_add_tensor(w, "m.f32", TENSOR_F32, 2, (int64_t[]){6, 5}, f32);
    gguf_writer_add_tensor(w, "m.q8", TENSOR_Q8_0, 2, (int64_t[]){32, 3}, q8);
    gguf_writer_add_tensor(w, "m.f16", TENSOR_F16, 3, (int64_t[]){2, 3, 4}, f16);
    gguf_writer_add_tensor(w, "v", TENSOR_F32, 4, (int64_t[]){1, 1, 1, 3}, f32);
    char err[256];
    if (gguf_writer_save(w, path, err, sizeof err) != 0)
        fail_msg("save: %s", err);
    gguf_writer_free(w);
}

static void check_scalars(const gguf_file *f)
{
    uint64_t u;
    int64_t i;
    double d;
    bool b;
    gguf_str s;
    assert_true(gguf_get_str(f, "general.architecture", &s) && gguf_str_eq(s, "llama"));
    assert_true(gguf_get_u64(f, "u32", &u) && u == 4000000000u);
    assert_true(gguf_get_i64(f, "u32", &i) && i == 4000000000);
    assert_true(gguf_get_f64(f, "u32", &d) && d == 4e9);
    assert_true(gguf_get_i64(f, "i32", &i) && i == -123456);
    assert_false(gguf_get_u64(f, "i32", &u));           /* negative: no unsigned meaning */
    assert_true(gguf_get_f64(f, "f32", &d) && d == 0.5);
    assert_false(gguf_get_u64(f, "f32", &u));           /* 0.5 is not an integer */
    assert_true(gguf_get_u64(f, "f32.whole", &u) && u == 3);
    assert_true(gguf_get_bool(f, "yes", &b) && b);
    assert_true(gguf_get_bool(f, "no", &b) && !b);
    assert_false(gguf_get_u64(f, "yes", &u));
    assert_true(gguf_get_str(f, "empty", &s) && s.len == 0 && gguf_str_eq(s, ""));
    assert_false(gguf_get_str(f, "u32", &s));
    assert_false(gguf_get_bool(f, "u32", &b));
    assert_false(gguf_get_u64(f, "missing", &u));
    assert_false(gguf_get_u64(f, "general.architecture", &u));
    assert_null(gguf_find(f, "u3"));
    assert_null(gguf_find(f, "u32x"));
}

static void check_arrays(const gguf_file *f)
{
    const gguf_value *a = gguf_get_array(f, "tokens");
    assert_non_null(a);
    assert_int_equal(a->v.arr.elem_type, GGUF_TYPE_STRING);
    assert_int_equal(a->v.arr.n, 4);
    assert_non_null(a->v.arr.strings);
    for (int i = 0; i < 4; i++)
        assert_true(gguf_str_eq(a->v.arr.strings[i], vocab[i]));
    a = gguf_get_array(f, "scores");
    assert_non_null(a);
    assert_int_equal(a->v.arr.elem_type, GGUF_TYPE_FLOAT32);
    assert_null(a->v.arr.strings);
    for (int i = 0; i < 4; i++)
        assert_true(gguf_array_f64(a, (uint64_t)i) == (double)scores[i]);
    assert_int_equal(gguf_array_i64(a, 2), 3);
    a = gguf_get_array(f, "types");
    assert_non_null(a);
    for (int i = 0; i < 4; i++)
        assert_int_equal(gguf_array_i64(a, (uint64_t)i), types[i]);
    assert_true(gguf_array_f64(a, 1) == -7.0);
    a = gguf_get_array(f, "none");
    assert_non_null(a);
    assert_int_equal(a->v.arr.n, 0);
    assert_null(gguf_get_array(f, "u32"));
}

static void check_tensor(const gguf_file *f, const char *name, enum tensor_type type,
                         uint32_t n_dims, const int64_t *ne, const void *data, size_t nbytes)
{
    const gguf_tensor *t = gguf_find_tensor(f, name);
    assert_non_null(t);
    assert_int_equal(t->type, type);
    assert_int_equal(t->n_dims, n_dims);
    for (int d = 0; d < GGUF_MAX_DIMS; d++)
        assert_int_equal(t->ne[d], d < (int)n_dims ? ne[d] : 1);
    assert_int_equal(t->nbytes, nbytes);
    assert_int_equal(t->offset % 32, 0);
    assert_int_equal(((const uint8_t *)t->data - f->base) % 32, 0);
    assert_memory_equal(t->data, data, nbytes);
}

static void test_round_trip(void **state)
{
    (void)state;
    char path[64], err[256];
    float f32[30];
    uint8_t q8[34 * 3];
    uint16_t f16[24];
    temp_path(path, sizeof path);
    write_everything(path, f32, q8, f16);
    gguf_file *f = NULL;
    if (gguf_open(&f, path, err, sizeof err) != 0)
        fail_msg("open: %s", err);
    assert_int_equal(f->version, 3);
    assert_int_equal(f->alignment, 32);
    assert_true(f->mapped);
    static const char *const order[] = {"general.architecture", "u32", "i32", "f32",
        "f32.whole", "yes", "no", "empty", "tokens", "scores", "types", "none"};
    assert_int_equal(f->n_kv, 12);
    for (int i = 0; i < 12; i++)
        assert_true(gguf_str_eq(f->kv[i].key, order[i]));
    check_scalars(f);
    check_arrays(f);
    assert_int_equal(f->n_tensors, 4);
    assert_true(gguf_str_eq(f->tensors[0].name, "m.f32"));
    check_tensor(f, "m.f32", TENSOR_F32, 2, (int64_t[]){6, 5}, f32, sizeof f32);
    check_tensor(f, "m.q8", TENSOR_Q8_0, 2, (int64_t[]){32, 3}, q8, sizeof q8);
    check_tensor(f, "m.f16", TENSOR_F16, 3, (int64_t[]){2, 3, 4}, f16, sizeof f16);
    check_tensor(f, "v", TENSOR_F32, 4, (int64_t[]){1, 1, 1, 3}, f32, 12);
    assert_null(gguf_find_tensor(f, "m"));
    gguf_close(f);
    remove(path);
}

static void test_zero_tensors(void **state)
{
    (void)state;
    char path[64], err[256];
    temp_path(path, sizeof path);
    gguf_writer *w = gguf_writer_create();
    gguf_writer_add_u32(w, "only", 7);
    assert_int_equal(gguf_writer_save(w, path, err, sizeof err), 0);
    gguf_writer_free(w);
    gguf_file *f = NULL;
    assert_int_equal(gguf_open(&f, path, err, sizeof err), 0);
    assert_int_equal(f->n_tensors, 0);
    assert_int_equal(f->n_kv, 1);
    gguf_close(f);
    remove(path);

    struct fb b = {0};
    fb_header(&b, 3, 0, 0);     /* a bare header is a valid, empty file */
    expect_accepted(&b);
    free(b.p);
}

/* ---- value types the writer lacks, v2, nested arrays -------------------------------- */

static void fb_all_scalars(struct fb *b)
{
    fb_header(b, 2, 0, 11);
    fb_key(b, "u8", GGUF_TYPE_UINT8);       fb_le(b, 200, 1);
    fb_key(b, "i8", GGUF_TYPE_INT8);        fb_le(b, 0xfb, 1);          /* -5 */
    fb_key(b, "u16", GGUF_TYPE_UINT16);     fb_le(b, 65535, 2);
    fb_key(b, "i16", GGUF_TYPE_INT16);      fb_le(b, 0x8000, 2);        /* -32768 */
    fb_key(b, "u64", GGUF_TYPE_UINT64);     fb_u64(b, UINT64_MAX);
    fb_key(b, "i64", GGUF_TYPE_INT64);      fb_u64(b, (uint64_t)-9);
    fb_key(b, "f64", GGUF_TYPE_FLOAT64);    fb_u64(b, 0x400921fb54442d18ull); /* pi */
    fb_key(b, "u8s", GGUF_TYPE_ARRAY);      fb_u32(b, GGUF_TYPE_UINT8); fb_u64(b, 3);
    fb_le(b, 0x030201, 3);
    fb_key(b, "bools", GGUF_TYPE_ARRAY);    fb_u32(b, GGUF_TYPE_BOOL); fb_u64(b, 2);
    fb_le(b, 0x0100, 2);
    fb_key(b, "f64s", GGUF_TYPE_ARRAY);     fb_u32(b, GGUF_TYPE_FLOAT64); fb_u64(b, 1);
    fb_u64(b, 0xc000000000000000ull);       /* -2.0 */
    /* [[1, 2], ["x"]]: nested arrays are walked, not indexed */
    fb_key(b, "nested", GGUF_TYPE_ARRAY);   fb_u32(b, GGUF_TYPE_ARRAY); fb_u64(b, 2);
    fb_u32(b, GGUF_TYPE_INT16);             fb_u64(b, 2); fb_le(b, 0x00020001, 4);
    fb_u32(b, GGUF_TYPE_STRING);            fb_u64(b, 1); fb_str(b, "x");
}

static void test_other_value_types(void **state)
{
    (void)state;
    struct fb b = {0};
    fb_all_scalars(&b);
    char err[256];
    gguf_file *f = NULL;
    if (gguf_parse(&f, b.p, b.len, err, sizeof err) != 0)
        fail_msg("refused: %s", err);
    assert_int_equal(f->version, 2);
    uint64_t u;
    int64_t i;
    double d;
    assert_true(gguf_get_u64(f, "u8", &u) && u == 200);
    assert_true(gguf_get_i64(f, "i8", &i) && i == -5);
    assert_true(gguf_get_u64(f, "u16", &u) && u == 65535);
    assert_true(gguf_get_i64(f, "i16", &i) && i == -32768);
    assert_true(gguf_get_u64(f, "u64", &u) && u == UINT64_MAX);
    assert_false(gguf_get_i64(f, "u64", &i));   /* does not fit */
    assert_true(gguf_get_i64(f, "i64", &i) && i == -9);
    assert_true(gguf_get_f64(f, "i64", &d) && d == -9.0);
    assert_true(gguf_get_f64(f, "f64", &d) && d > 3.14159 && d < 3.14160);
    assert_false(gguf_get_i64(f, "f64", &i));
    const gguf_value *a = gguf_get_array(f, "u8s");
    assert_non_null(a);
    assert_int_equal(gguf_array_i64(a, 0), 1);
    assert_int_equal(gguf_array_i64(a, 2), 3);
    assert_int_equal(gguf_array_i64(a, 3), 0);      /* out of range: 0, no read */
    a = gguf_get_array(f, "bools");
    assert_int_equal(gguf_array_i64(a, 0), 0);
    assert_int_equal(gguf_array_i64(a, 1), 1);
    a = gguf_get_array(f, "f64s");
    assert_true(gguf_array_f64(a, 0) == -2.0);
    assert_int_equal(gguf_array_i64(a, 0), -2);
    a = gguf_get_array(f, "nested");
    assert_non_null(a);
    assert_int_equal(a->v.arr.elem_type, GGUF_TYPE_ARRAY);
    assert_int_equal(a->v.arr.n, 2);
    assert_null(a->v.arr.strings);
    assert_true(gguf_array_f64(a, 0) == 0.0);
    gguf_close(f);
    /* every proper prefix of it is refused too */
    for (size_t n = 0; n < b.len; n++) {
        struct fb cut = {b.p, n, n};
        expect_refused(&cut, "");
    }
    free(b.p);
}

static void test_nesting_depth(void **state)
{
    (void)state;
    struct fb b = {0};
    fb_header(&b, 3, 0, 1);
    fb_key(&b, "deep", GGUF_TYPE_ARRAY);
    for (int i = 0; i < 20; i++) {
        fb_u32(&b, GGUF_TYPE_ARRAY);
        fb_u64(&b, 1);
    }
    fb_u32(&b, GGUF_TYPE_UINT8);
    fb_u64(&b, 0);
    expect_refused(&b, "nested");
    free(b.p);
}

/* ---- the real model --------------------------------------------------------------- */

static void test_stories260K(void **state)
{
    (void)state;
    char err[256];
    gguf_file *f = NULL;
    if (gguf_open(&f, STORIES, err, sizeof err) != 0)
        fail_msg("%s: %s", STORIES, err);
    gguf_str s;
    assert_true(gguf_get_str(f, "general.architecture", &s) && gguf_str_eq(s, "llama"));
    assert_int_equal(f->version, 3);
    assert_int_equal(f->n_kv, 19);
    assert_int_equal(f->n_tensors, 48);
    uint64_t u;
    double d;
    assert_true(gguf_get_u64(f, "llama.embedding_length", &u) && u == 64);
    assert_true(gguf_get_u64(f, "llama.block_count", &u) && u == 5);
    assert_true(gguf_get_u64(f, "llama.feed_forward_length", &u) && u == 172);
    assert_true(gguf_get_f64(f, "llama.attention.layer_norm_rms_epsilon", &d));
    assert_true(d > 0.99e-5 && d < 1.01e-5);
    const gguf_value *tok = gguf_get_array(f, "tokenizer.ggml.tokens");
    assert_non_null(tok);
    assert_int_equal(tok->v.arr.n, 512);
    assert_true(gguf_str_eq(tok->v.arr.strings[0], "<unk>"));
    const gguf_tensor *t = gguf_find_tensor(f, "token_embd.weight");
    assert_non_null(t);
    assert_int_equal(t->type, TENSOR_F32);
    assert_int_equal(t->n_dims, 2);
    assert_int_equal(t->ne[0], 64);
    assert_int_equal(t->ne[1], 512);
    assert_int_equal(t->nbytes, 64 * 512 * 4);
    t = gguf_find_tensor(f, "blk.4.ffn_down.weight");
    assert_non_null(t);
    assert_int_equal(t->ne[0], 172);
    assert_int_equal(t->ne[1], 64);
    const gguf_tensor *last = &f->tensors[f->n_tensors - 1];
    assert_true((const uint8_t *)last->data + last->nbytes <= f->base + f->size);
    gguf_close(f);
}

/* ---- corruption ------------------------------------------------------------------- */

/* A small writer-made file cut at every length: each prefix must be refused cleanly
 * (the last tensor ends at the end of the file, so no proper prefix is complete). */
static void test_truncation(void **state)
{
    (void)state;
    char path[64];
    float f32[30];
    uint8_t q8[34 * 3];
    uint16_t f16[24];
    temp_path(path, sizeof path);
    write_everything(path, f32, q8, f16);
    size_t size;
    uint8_t *p = read_whole(path, &size);
    remove(path);
    struct fb whole = {p, size, size};
    expect_accepted(&whole);
    for (size_t n = 0; n < size; n++) {
        struct fb cut = {p, n, n};
        char err[256] = "";
        gguf_file *f = NULL;
        if (parse_exact(&f, cut.p, cut.len, err, sizeof err) == 0)
            fail_msg("prefix of %zu bytes accepted", n);
        assert_null(f);
        assert_true(err[0] != '\0');
    }
    free(p);
}

static void test_bad_header(void **state)
{
    (void)state;
    struct fb b = {0};
    fb_valid(&b, 0, 32, TENSOR_F32);
    expect_accepted(&b);
    b.p[0] = 'X';
    expect_refused(&b, "magic");
    b.p[0] = 'G';
    b.p[4] = 1;
    expect_refused(&b, "version 1");
    b.p[4] = 4;
    expect_refused(&b, "version 4");
    b.p[4] = 0;
    b.p[7] = 3;
    expect_refused(&b, "big-endian");
    b.p[7] = 0;
    b.p[4] = 3;
    memcpy(b.p + 8, (uint64_t[]){1ull << 60}, 8);
    expect_refused(&b, "tensor count");
    memcpy(b.p + 8, (uint64_t[]){UINT64_MAX}, 8);
    expect_refused(&b, "tensor count");
    memcpy(b.p + 8, (uint64_t[]){2}, 8);
    memcpy(b.p + 16, (uint64_t[]){1ull << 40}, 8);
    expect_refused(&b, "metadata count");
    memcpy(b.p + 16, (uint64_t[]){1}, 8);
    memcpy(b.p + 24, (uint64_t[]){1ull << 62}, 8);       /* the key's length */
    expect_refused(&b, "string length");
    memcpy(b.p + 24, (uint64_t[]){UINT64_MAX}, 8);
    expect_refused(&b, "string length");
    free(b.p);
    struct fb tiny = {(uint8_t *)"GGU", 3, 3};
    expect_refused(&tiny, "truncated");
}

static void test_bad_values(void **state)
{
    (void)state;
    struct fb b = {0};
    fb_header(&b, 3, 0, 1);
    fb_key(&b, "k", 13);
    fb_u32(&b, 0);
    expect_refused(&b, "unknown metadata value type 13");
    free(b.p);

    b = (struct fb){0};
    fb_header(&b, 3, 0, 1);
    fb_key(&b, "arr", GGUF_TYPE_ARRAY);
    fb_u32(&b, GGUF_TYPE_UINT32);
    fb_u64(&b, 1ull << 61);
    fb_zeros(&b, 64);
    expect_refused(&b, "array of");
    free(b.p);

    b = (struct fb){0};
    fb_header(&b, 3, 0, 1);
    fb_key(&b, "strs", GGUF_TYPE_ARRAY);
    fb_u32(&b, GGUF_TYPE_STRING);
    fb_u64(&b, 2);
    fb_str(&b, "ok");
    fb_u64(&b, 1ull << 50);
    fb_zeros(&b, 16);
    expect_refused(&b, "string length");
    free(b.p);

    b = (struct fb){0};
    fb_header(&b, 3, 0, 2);
    fb_key(&b, "same", GGUF_TYPE_UINT8);
    fb_le(&b, 1, 1);
    fb_key(&b, "same", GGUF_TYPE_UINT8);
    fb_le(&b, 2, 1);
    expect_refused(&b, "duplicate metadata key 'same'");
    free(b.p);

    b = (struct fb){0};
    fb_header(&b, 3, 0, 1);
    fb_key(&b, "", GGUF_TYPE_UINT8);
    fb_le(&b, 1, 1);
    fb_zeros(&b, 16);
    expect_refused(&b, "key");
    free(b.p);
}

/* A file with `alignment` stored as type t, and one tensor at offset `off`. */
static void fb_aligned(struct fb *b, enum gguf_value_type t, uint64_t alignment, uint64_t off)
{
    static const uint64_t ne[] = {16};
    fb_header(b, 3, 1, 1);
    fb_key(b, "general.alignment", t);
    fb_le(b, alignment, t == GGUF_TYPE_UINT64 ? 8 : 4);
    fb_tensor(b, "t", 1, ne, TENSOR_F32, off);
    fb_pad(b, alignment > 0 && alignment <= 4096 ? alignment : 32);
    fb_zeros(b, off + 64);
}

static void test_alignment(void **state)
{
    (void)state;
    struct fb b = {0};
    fb_aligned(&b, GGUF_TYPE_UINT32, 64, 64);
    expect_accepted(&b);
    char err[256];
    gguf_file *f = NULL;
    assert_int_equal(gguf_parse(&f, b.p, b.len, err, sizeof err), 0);
    assert_int_equal(f->alignment, 64);
    assert_int_equal(((const uint8_t *)f->tensors[0].data - b.p) % 64, 0);
    gguf_close(f);
    free(b.p);
    static const struct {
        enum gguf_value_type t;
        uint64_t a, off;
        const char *needle;
    } bad[] = {
        {GGUF_TYPE_UINT32, 48, 0, "power of two"},
        {GGUF_TYPE_UINT32, 0, 0, "power of two"},
        {GGUF_TYPE_UINT64, 1ull << 63, 0, "data section"},
        {GGUF_TYPE_INT32, 32, 0, "general.alignment has type INT32"},
        {GGUF_TYPE_FLOAT32, 32, 0, "general.alignment"},
        {GGUF_TYPE_UINT32, 64, 32, "misaligned"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        b = (struct fb){0};
        fb_aligned(&b, bad[i].t, bad[i].a, bad[i].off);
        expect_refused(&b, bad[i].needle);
        free(b.p);
    }
}

static void refuse_tensor(uint32_t n_dims, const uint64_t *ne, uint32_t type, uint64_t off,
                          const char *needle)
{
    struct fb b = {0};
    fb_header(&b, 3, 1, 0);
    fb_tensor(&b, "w", n_dims, ne, type, off);
    fb_pad(&b, 32);
    fb_zeros(&b, 256);
    expect_refused(&b, needle);
    free(b.p);
}

static void test_bad_tensors(void **state)
{
    (void)state;
    refuse_tensor(1, (uint64_t[]){8}, 99, 0, "unknown tensor type 99");
    refuse_tensor(1, (uint64_t[]){8}, 4, 0, "unknown tensor type 4");
    refuse_tensor(1, (uint64_t[]){8}, 1u << 31, 0, "unknown tensor type");
    refuse_tensor(0, NULL, TENSOR_F32, 0, "0 dimensions");
    refuse_tensor(5, (uint64_t[]){1, 1, 1, 1, 1}, TENSOR_F32, 0, "5 dimensions");
    refuse_tensor(2, (uint64_t[]){8, 0}, TENSOR_F32, 0, "dimension 1 is 0");
    refuse_tensor(1, (uint64_t[]){UINT64_MAX}, TENSOR_F32, 0, "dimension 0 is -1");
    refuse_tensor(4, (uint64_t[]){1ull << 20, 1ull << 20, 1ull << 20, 1ull << 20}, TENSOR_F32,
                  0, "element count overflows");
    refuse_tensor(1, (uint64_t[]){1ull << 62}, TENSOR_F32, 0, "overflows");
    refuse_tensor(2, (uint64_t[]){1ull << 20, 1ull << 20}, TENSOR_F32, 0, "out of range");
    refuse_tensor(1, (uint64_t[]){40}, TENSOR_Q8_0, 0, "not a multiple of the Q8_0 block");
    refuse_tensor(1, (uint64_t[]){8}, TENSOR_F32, 1024, "out of range");
    refuse_tensor(1, (uint64_t[]){8}, TENSOR_F32, 1ull << 63, "out of range");
    refuse_tensor(1, (uint64_t[]){8}, TENSOR_F32, UINT64_MAX - 31, "out of range");
    refuse_tensor(1, (uint64_t[]){8}, TENSOR_F32, 8, "misaligned");
    refuse_tensor(1, (uint64_t[]){72}, TENSOR_F32, 0, "out of range");   /* 288 > 256 */
}

static void test_tensor_layout(void **state)
{
    (void)state;
    struct fb b = {0};
    fb_valid(&b, 0, 0, TENSOR_F32);
    expect_refused(&b, "overlap");
    free(b.p);
    b = (struct fb){0};
    fb_valid(&b, 32, 0, TENSOR_F32);        /* b (32 bytes) at 0, a (32 bytes) at 32: fine */
    expect_accepted(&b);
    free(b.p);
    b = (struct fb){0};
    fb_valid(&b, 0, 32, TENSOR_F32);
    b.len -= 1;                             /* b's last byte is missing */
    expect_refused(&b, "out of range");
    free(b.p);
    static const uint64_t ne[] = {8};
    b = (struct fb){0};
    fb_header(&b, 3, 2, 0);
    fb_tensor(&b, "x", 1, ne, TENSOR_F32, 0);
    fb_tensor(&b, "x", 1, ne, TENSOR_F32, 32);
    fb_pad(&b, 32);
    fb_zeros(&b, 64);
    expect_refused(&b, "duplicate tensor name 'x'");
    b.len = 0;
    fb_header(&b, 3, 2, 0);                 /* data section start lies past the end */
    fb_tensor(&b, "x", 1, ne, TENSOR_F32, 0);
    fb_tensor(&b, "y", 1, ne, TENSOR_F32, 32);
    expect_refused(&b, "data section");
    free(b.p);
}

static void test_open_errors(void **state)
{
    (void)state;
    char err[256], path[64];
    gguf_file *f = (gguf_file *)1;
    assert_int_equal(gguf_open(&f, "tests/data/no-such-file.gguf", err, sizeof err), -1);
    assert_null(f);
    assert_non_null(strstr(err, "cannot open"));
    assert_int_equal(gguf_open(&f, "tests/data", err, sizeof err), -1);
    assert_non_null(strstr(err, "regular file"));
    temp_path(path, sizeof path);
    assert_int_equal(gguf_open(&f, path, err, sizeof err), -1);
    assert_non_null(strstr(err, "empty"));
    remove(path);
    assert_int_equal(gguf_parse(&f, NULL, 0, NULL, 0), -1);  /* no err buffer is fine */
    gguf_close(NULL);
}

/* ---- writer errors ---------------------------------------------------------------- */

static void expect_save_error(gguf_writer *w, const char *needle)
{
    char err[256] = "", path[64];
    temp_path(path, sizeof path);
    assert_int_equal(gguf_writer_save(w, path, err, sizeof err), -1);
    remove(path);
    if (strstr(err, needle) == NULL)
        fail_msg("save error '%s' does not mention '%s'", err, needle);
    gguf_writer_free(w);
}

static void test_writer_errors(void **state)
{
    (void)state;
    float data[64] = {0};
    gguf_writer *w = gguf_writer_create();
    gguf_writer_add_u32(w, "k", 1);
    gguf_writer_add_f32(w, "k", 2);
    gguf_writer_add_u32(w, "later", 3);      /* ignored: the first error is kept */
    expect_save_error(w, "duplicate metadata key 'k'");
    w = gguf_writer_create();
    gguf_writer_add_tensor(w, "q", TENSOR_Q8_0, 1, (int64_t[]){40}, data);
    expect_save_error(w, "not a multiple");
    w = gguf_writer_create();
    gguf_writer_add_tensor(w, "t", TENSOR_F32, 1, (int64_t[]){4}, data);
    gguf_writer_add_tensor(w, "t", TENSOR_F32, 1, (int64_t[]){4}, data);
    expect_save_error(w, "duplicate tensor name 't'");
    w = gguf_writer_create();
    gguf_writer_add_tensor(w, "t", (enum tensor_type)99, 1, (int64_t[]){4}, data);
    expect_save_error(w, "unknown tensor type 99");
    w = gguf_writer_create();
    gguf_writer_add_tensor(w, "t", TENSOR_F32, 2, (int64_t[]){4, 0}, data);
    expect_save_error(w, "dimension 1");
    w = gguf_writer_create();
    gguf_writer_add_str(w, "s", NULL);
    expect_save_error(w, "NULL");
    w = gguf_writer_create();
    char err[256];
    assert_int_equal(gguf_writer_save(w, "/nonexistent-dir/x.gguf", err, sizeof err), -1);
    assert_non_null(strstr(err, "cannot create"));
    gguf_writer_free(w);
    gguf_writer_free(NULL);
    gguf_writer_add_u32(NULL, "k", 1);      /* NULL writer: a no-op, not a crash */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_zero_tensors),
        cmocka_unit_test(test_other_value_types),
        cmocka_unit_test(test_nesting_depth),
        cmocka_unit_test(test_stories260K),
        cmocka_unit_test(test_truncation),
        cmocka_unit_test(test_bad_header),
        cmocka_unit_test(test_bad_values),
        cmocka_unit_test(test_alignment),
        cmocka_unit_test(test_bad_tensors),
        cmocka_unit_test(test_tensor_layout),
        cmocka_unit_test(test_open_errors),
        cmocka_unit_test(test_writer_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
