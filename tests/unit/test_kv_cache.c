/* test_kv_cache.c - unit tests for kernels/model/kv_cache.c, the paged KV cache.
 *
 * The pool's accounting (every block held, cached or free, never two of them), a
 * reservation that cannot be met taking nothing, the prefix index (a chain matches
 * only from its start and only with the same tokens; shared blocks are counted once;
 * unused indexed blocks are evicted least recently released first, a chain's tail
 * before its head) and the storage types (f32 exact, f16 rounded to nearest, q8_0 within
 * half a quantization step).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/quant.h"
#include "model/kv_cache.h"

enum { BT = 4 };

static kv_cache *make_cache(enum kv_dtype dtype, int n_blocks)
{
    char err[128];
    kv_cache_shape shape = {.n_layers = 2, .n_kv_heads = 2, .head_dim = 8, .block_tokens = BT, .dtype = dtype};
    kv_cache *c = kv_cache_create(&shape, n_blocks, err, sizeof err);
    assert_non_null(c);
    return c;
}

static void assert_counts(const kv_cache *c, int used, int cached, int free_)
{
    kv_cache_stats st = kv_cache_get_stats(c);
    assert_int_equal(st.used, used);
    assert_int_equal(st.cached, cached);
    assert_int_equal(st.free, free_);
    assert_int_equal(st.used + st.cached + st.free, st.n_blocks);
}

static void test_reserve_and_release(void **state)
{
    (void)state;
    kv_cache *c = make_cache(KV_F16, 5);
    kv_seq a, b;
    kv_seq_init(&a, c);
    kv_seq_init(&b, c);
    assert_int_equal(kv_seq_reserve(&a, 9), 0);   /* 3 blocks */
    assert_int_equal(a.n_blocks, 3);
    assert_int_equal(kv_seq_spare(&a), 12);
    assert_counts(c, 3, 0, 2);
    assert_int_equal(kv_seq_reserve(&b, 12), -1);  /* needs 3, 2 left: takes nothing */
    assert_int_equal(b.n_blocks, 0);
    assert_counts(c, 3, 0, 2);
    assert_int_equal(kv_seq_reserve(&b, 8), 0);
    assert_int_equal(kv_cache_available(c), 0);
    assert_int_equal(kv_seq_reserve(&a, 12), 0);   /* already held */
    assert_int_equal(kv_seq_reserve(&a, 13), -1);
    kv_seq_release(&a);
    assert_int_equal(a.n_blocks, 0);
    assert_counts(c, 2, 0, 3);                     /* nothing published: plain free */
    kv_seq_release(&b);
    assert_counts(c, 0, 0, 5);
    kv_cache_free(c);
}

static void test_bad_shapes_refused(void **state)
{
    (void)state;
    char err[128];
    kv_cache_shape odd = {.n_layers = 1, .n_kv_heads = 1, .head_dim = 7, .block_tokens = 16, .dtype = KV_F16};
    assert_null(kv_cache_create(&odd, 4, err, sizeof err));
    assert_non_null(strstr(err, "head size"));
    kv_cache_shape big_blocks = {.n_layers = 1, .n_kv_heads = 1, .head_dim = 8, .block_tokens = 65, .dtype = KV_F16};
    assert_null(kv_cache_create(&big_blocks, 4, err, sizeof err));
    kv_cache_shape ok = {.n_layers = 1, .n_kv_heads = 1, .head_dim = 8, .block_tokens = 16, .dtype = KV_F16};
    assert_null(kv_cache_create(&ok, 0, err, sizeof err));
    enum kv_dtype t;
    assert_int_equal(kv_dtype_parse("q8_0", &t), 0);
    assert_int_equal(t, KV_Q8_0);
    assert_int_equal(kv_dtype_parse("f8", &t), -1);
    assert_string_equal(kv_dtype_name(KV_F32), "f32");
}

/* Fills the positions [s->n_tokens, n) (as a forward pass would) and publishes. */
static void fill(kv_seq *s, const int32_t *tokens, int n)
{
    assert_int_equal(kv_seq_reserve(s, n), 0);
    float k[16] = {0}, v[16] = {0};
    for (int p = s->n_tokens; p < n; p++)
        for (int l = 0; l < 2; l++) {
            for (int i = 0; i < 16; i++) k[i] = v[i] = (float)(tokens[p] * 100 + l * 10 + i);
            kv_cache_store(s, l, p, k, v);
        }
    s->n_tokens = n;
    kv_seq_publish(s, tokens);
}

static void test_prefix_sharing(void **state)
{
    (void)state;
    kv_cache *c = make_cache(KV_F32, 8);
    int32_t t[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
    kv_seq a, b, d;
    kv_seq_init(&a, c);
    kv_seq_init(&b, c);
    kv_seq_init(&d, c);
    fill(&a, t, 10);   /* blocks 0..1 full and indexed, block 2 partial */
    assert_int_equal(a.n_indexed, 2);
    assert_int_equal(kv_seq_match_prefix(&b, t, 15), 8);
    assert_memory_equal(b.blocks, a.blocks, 2 * sizeof(int));
    assert_counts(c, 3, 0, 5);                   /* shared blocks count once */
    /* b reads the shared rows a wrote */
    float rows[BT * 8];
    const float *r = kv_seq_rows(&b, 1, 1, 1, true, BT, rows);
    assert_true(r[0] == 5 * 100 + 10 + 8);       /* position 4 (token 5), layer 1, value head 1 */
    /* at most max_tokens: 7 tokens allow one block */
    assert_int_equal(kv_seq_match_prefix(&d, t, 7), 4);
    kv_seq_release(&d);
    /* different tokens in block 1: only block 0 matches; a chain never matches mid-way */
    int32_t u[16];
    memcpy(u, t, sizeof u);
    u[5] = 99;
    assert_int_equal(kv_seq_match_prefix(&d, u, 16), 4);
    kv_seq_release(&d);
    assert_int_equal(kv_seq_match_prefix(&d, t + 4, 12), 0);
    kv_seq_release(&d);
    /* another namespace (say, an adapter's) never sees the base model's blocks */
    kv_seq_set_namespace(&d, 42);
    assert_int_equal(kv_seq_match_prefix(&d, t, 16), 0);
    kv_seq_release(&d);
    assert_int_equal(d.prefix_ns, 42);
    kv_seq_set_namespace(&d, 0);
    /* a goes away: its blocks stay with b */
    kv_seq_release(&a);
    assert_counts(c, 2, 0, 6);
    kv_seq_release(&b);
    assert_counts(c, 0, 2, 6);                   /* indexed and unused: cached */
    assert_int_equal(kv_cache_available(c), 8);
    kv_cache_free(c);
}

static void test_lru_eviction(void **state)
{
    (void)state;
    kv_cache *c = make_cache(KV_F16, 4);
    int32_t x[8] = {1, 1, 1, 1, 2, 2, 2, 2}, y[8] = {3, 3, 3, 3, 4, 4, 4, 4};
    kv_seq a, b;
    kv_seq_init(&a, c);
    kv_seq_init(&b, c);
    fill(&a, x, 8);
    kv_seq_release(&a);          /* x released first */
    fill(&b, y, 8);
    kv_seq_release(&b);
    assert_counts(c, 0, 4, 0);
    /* one new block evicts x's tail (block {2,2,2,2}), the least recently released */
    kv_seq_init(&a, c);
    assert_int_equal(kv_seq_reserve(&a, 1), 0);
    assert_int_equal(kv_cache_get_stats(c).evictions, 1);
    kv_seq d;
    kv_seq_init(&d, c);
    assert_int_equal(kv_seq_match_prefix(&d, x, 8), 4);   /* x's head survives */
    kv_seq_release(&d);
    assert_int_equal(kv_seq_match_prefix(&d, y, 8), 8);   /* y untouched */
    /* a block held by a sequence is never evicted: 2 held by d, 1 by a, 1 cached */
    assert_counts(c, 3, 1, 0);
    kv_seq e;
    kv_seq_init(&e, c);
    assert_int_equal(kv_seq_reserve(&e, 5), -1);
    assert_int_equal(kv_seq_reserve(&e, 4), 0);
    assert_int_equal(kv_cache_available(c), 0);
    kv_seq_release(&d);
    kv_seq_release(&e);
    kv_seq_release(&a);
    kv_cache_free(c);
}

static void test_duplicate_content_stays_private(void **state)
{
    (void)state;
    kv_cache *c = make_cache(KV_F16, 4);
    int32_t t[4] = {7, 8, 9, 10};
    kv_seq a, b;
    kv_seq_init(&a, c);
    kv_seq_init(&b, c);
    fill(&a, t, 4);
    fill(&b, t, 4);               /* computed side by side: the second is not indexed */
    kv_seq_release(&a);
    kv_seq_release(&b);
    assert_counts(c, 0, 1, 3);
    kv_cache_free(c);
}

/* One row through each type: f32 as stored, f16 rounded to nearest, q8_0 within half
 * a step of its group's scale. */
static void test_storage_types(void **state)
{
    (void)state;
    float k[16], v[16], rows[BT * 8];
    for (int i = 0; i < 16; i++) {
        k[i] = 0.1234567f * (float)(i - 7) + 1e-3f;
        v[i] = -3.0f + 0.377f * (float)i;
    }
    for (int t = KV_F16; t <= KV_Q8_0; t++) {
        kv_cache *c = make_cache((enum kv_dtype)t, 2);
        kv_seq s;
        kv_seq_init(&s, c);
        assert_int_equal(kv_seq_reserve(&s, 6), 0);
        kv_cache_store(&s, 1, 5, k, v);   /* block 1, slot 1 */
        for (int h = 0; h < 2; h++) {
            const float *kr = kv_seq_rows(&s, 1, 1, h, false, 2, rows);
            float kk[8];
            memcpy(kk, kr + 8, sizeof kk);
            const float *vr = kv_seq_rows(&s, 1, 1, h, true, 2, rows);
            float amax_k = 0, amax_v = 0;
            for (int i = 0; i < 8; i++) {
                amax_k = fmaxf(amax_k, fabsf(k[h * 8 + i]));
                amax_v = fmaxf(amax_v, fabsf(v[h * 8 + i]));
            }
            for (int i = 0; i < 8; i++) {
                float want_k = k[h * 8 + i], want_v = v[h * 8 + i], got_v = vr[8 + i];
                if (t == KV_F32) {
                    assert_true(kk[i] == want_k && got_v == want_v);
                } else if (t == KV_F16) {
                    assert_true(kk[i] == fp16_to_fp32(fp32_to_fp16(want_k)));
                    assert_true(got_v == fp16_to_fp32(fp32_to_fp16(want_v)));
                } else {
                    assert_true(fabsf(kk[i] - want_k) <= 0.51f * amax_k / 127.0f + 1e-6f);
                    assert_true(fabsf(got_v - want_v) <= 0.51f * amax_v / 127.0f + 1e-6f);
                }
            }
        }
        kv_seq_release(&s);
        kv_cache_free(c);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reserve_and_release),
        cmocka_unit_test(test_bad_shapes_refused),
        cmocka_unit_test(test_prefix_sharing),
        cmocka_unit_test(test_lru_eviction),
        cmocka_unit_test(test_duplicate_content_stays_private),
        cmocka_unit_test(test_storage_types),
    };
    return cmocka_run_group_tests_name("kv_cache", tests, NULL, NULL);
}
