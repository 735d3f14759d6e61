/* test_engine_batch.c - continuous batching (engine.h, "batches"): generations run
 * together (one greedy request among 16 others, greedy and seeded) give exactly the
 * tokens and text each gives alone through engine_generate, whatever joins when, with
 * prompts fed in small chunks; cancel and refusals. The paged KV cache: a cache too
 * small for everyone forces preemptions and the tokens do not change; the prefix cache
 * spares a repeated system prompt and the earlier turns of a chat (counted) and the
 * tokens do not change; the f32 and q8_0 caches behave as a session with the same.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"

#define STORIES "tests/data/models/stories260K.gguf"
#define N_GEN 17   /* one request and 16 others */

typedef struct outcome {
    bool done;
    engine_gen_result r;   /* copied ids and text */
    int streamed_len;
    char streamed[4096];
} outcome;

static bool collect_token(const engine_token_event *ev, void *user)
{
    outcome *o = user;
    if (o->streamed_len + ev->text_len < (int)sizeof o->streamed) {
        memcpy(o->streamed + o->streamed_len, ev->text, (size_t)ev->text_len);
        o->streamed_len += ev->text_len;
    }
    return true;
}

static void collect_done(uint64_t id, const engine_gen_result *r, void *user)
{
    (void)id;
    outcome *o = user;
    o->done = true;
    o->r = *r;
    o->r.ids = malloc(sizeof(int32_t) * (size_t)(r->n_generated + 1));
    memcpy(o->r.ids, r->ids, sizeof(int32_t) * (size_t)r->n_generated);
    o->r.text = strdup(r->text);
}

static const char *prompts[N_GEN] = {"Once upon a time", "The cat sat", "Lily and Tom went to the park and",
                                     "Hello", "One day, a little bird", "Sam had a red ball. He",
                                     "The sun was", "Tim liked to", "There was a big dog", "Mom said",
                                     "A girl named Sue", "The tree", "Ben and his friend", "It was a sunny day",
                                     "The little fish swam", "Once upon a time there was a car", "She smiled"};

static engine_gen_params params_for(int i)
{
    engine_gen_params p = engine_default_gen_params();
    p.max_tokens = 20 + 7 * (i % 9);
    if (i % 2) {   /* seeded sampling: must also be batch invariant */
        p.sampling.temperature = 0.9f;
        p.sampling.seed = 100 + (uint64_t)i;
        p.sampling.top_k = 40;
    } else {
        p.sampling.temperature = 0;
    }
    if (i == 4) p.stop[0] = "bird";
    return p;
}

static int tokenize(engine_model *m, const char *text, int32_t *ids, int cap)
{
    return engine_tokenize(m, text, strlen(text), engine_adds_bos(m), false, ids, cap);
}

static void test_batch_equals_alone(void **state)
{
    (void)state;
    engine_model *m;
    char err[256];
    assert_int_equal(engine_model_open(&m, STORIES, err, sizeof err), 0);
    outcome alone[N_GEN] = {0}, batched[N_GEN] = {0};
    for (int i = 0; i < N_GEN; i++) {
        engine_session *s = engine_session_create(m, &(engine_session_options){.n_ctx = 256, .n_threads = 2});
        int32_t ids[128];
        int n = tokenize(m, prompts[i], ids, 128);
        engine_gen_params p = params_for(i);
        assert_int_equal(engine_generate(s, ids, n, &p, collect_token, &alone[i], &alone[i].r, err, sizeof err), 0);
        engine_session_free(s);
    }
    /* a budget of 5 tokens a step: prompts arrive in chunks; a few join later */
    engine_batch *b = engine_batch_create(m, &(engine_batch_options){.n_ctx = 256, .max_seqs = N_GEN,
                                                                     .step_tokens = 5, .n_threads = 2}, err, sizeof err);
    assert_non_null(b);
    int steps = 0;
    for (int i = 0; i < N_GEN || engine_batch_active(b) > 0; steps++) {
        if (i < N_GEN && (steps == 0 || steps == 3 || steps == 9)) {
            int join = steps == 0 ? N_GEN - 2 : 1;
            for (int k = 0; k < join && i < N_GEN; k++, i++) {
                int32_t ids[128];
                int n = tokenize(m, prompts[i], ids, 128);
                engine_gen_params p = params_for(i);
                assert_int_equal(engine_batch_add(b, (uint64_t)i, ids, n, &p, collect_token, collect_done,
                                                  &batched[i], err, sizeof err), 0);
            }
        }
        assert_true(engine_batch_step(b) >= 0);
        assert_true(steps < 1000);
    }
    for (int i = 0; i < N_GEN; i++) {
        assert_true(batched[i].done);
        assert_int_equal(batched[i].r.n_generated, alone[i].r.n_generated);
        assert_memory_equal(batched[i].r.ids, alone[i].r.ids, sizeof(int32_t) * (size_t)alone[i].r.n_generated);
        assert_string_equal(batched[i].r.text, alone[i].r.text);
        assert_int_equal(batched[i].r.finish, alone[i].r.finish);
        assert_int_equal(batched[i].streamed_len, alone[i].streamed_len);
        assert_memory_equal(batched[i].streamed, alone[i].streamed, (size_t)alone[i].streamed_len);
        engine_gen_result_free(&alone[i].r);
        engine_gen_result_free(&batched[i].r);
    }
    engine_batch_free(b);
    engine_model_close(m);
}

static void test_batch_cancel_and_refusals(void **state)
{
    (void)state;
    engine_model *m;
    char err[256];
    assert_int_equal(engine_model_open(&m, STORIES, err, sizeof err), 0);
    engine_batch *b = engine_batch_create(m, &(engine_batch_options){.n_ctx = 64, .max_seqs = 2, .n_threads = 1}, err, sizeof err);
    int32_t ids[64];
    int n = tokenize(m, "Once upon a time", ids, 64);
    engine_gen_params p = engine_default_gen_params();
    p.max_tokens = 40;
    outcome o[3] = {0};
    assert_int_equal(engine_batch_add(b, 1, ids, n, &p, NULL, collect_done, &o[0], err, sizeof err), 0);
    assert_int_equal(engine_batch_add(b, 2, ids, n, &p, NULL, collect_done, &o[1], err, sizeof err), 0);
    assert_int_equal(engine_batch_add(b, 3, ids, n, &p, NULL, collect_done, &o[2], err, sizeof err), -1);
    assert_non_null(strstr(err, "full"));
    assert_int_equal(engine_batch_step(b), 2);
    assert_true(engine_batch_cancel(b, 1));
    assert_false(engine_batch_cancel(b, 99));
    assert_int_equal(engine_batch_step(b), 1);
    assert_true(o[0].done);
    assert_int_equal(o[0].r.finish, ENGINE_FINISH_CANCELLED);
    while (engine_batch_step(b) > 0) {}
    assert_true(o[1].done);
    assert_int_equal(o[1].r.finish, ENGINE_FINISH_LENGTH);
    assert_int_equal(o[1].r.n_generated, 40);
    int32_t bad = 99999;
    assert_int_equal(engine_batch_add(b, 4, &bad, 1, &p, NULL, NULL, NULL, err, sizeof err), -1);
    assert_non_null(strstr(err, "out of range"));
    int32_t longp[64] = {1};
    assert_int_equal(engine_batch_add(b, 5, longp, 64, &p, NULL, NULL, NULL, err, sizeof err), -1);
    assert_int_equal(engine_batch_add(b, 6, ids, 0, &p, NULL, NULL, NULL, err, sizeof err), -1);
    for (int i = 0; i < 2; i++)
        engine_gen_result_free(&o[i].r);
    engine_batch_free(b);
    engine_model_close(m);
}

/* ---- the paged cache ------------------------------------------------------------------ */

/* Runs every prompt through b, all added at once, until done. */
static void run_all(engine_batch *b, int32_t ids[][256], const int *lens, const engine_gen_params *params,
                    outcome *out, int n)
{
    char err[256];
    for (int i = 0; i < n; i++)
        assert_int_equal(engine_batch_add(b, (uint64_t)i, ids[i], lens[i], &params[i], collect_token, collect_done,
                                          &out[i], err, sizeof err), 0);
    int steps = 0;
    while (engine_batch_active(b) > 0) {
        assert_true(engine_batch_step(b) >= 0);
        assert_true(++steps < 20000);
    }
    for (int i = 0; i < n; i++)
        assert_true(out[i].done);
}

static void assert_same_outcome(const outcome *a, const outcome *b)
{
    assert_int_equal(a->r.n_generated, b->r.n_generated);
    assert_memory_equal(a->r.ids, b->r.ids, sizeof(int32_t) * (size_t)a->r.n_generated);
    assert_string_equal(a->r.text, b->r.text);
    assert_int_equal(a->r.finish, b->r.finish);
}

static void free_outcomes(outcome *o, int n)
{
    for (int i = 0; i < n; i++)
        engine_gen_result_free(&o[i].r);
}

/* Six long generations in a cache that holds one context (128 positions, far less than
 * they need together): the newest are preempted and recomputed, again and again, and
 * every one still gives the tokens it gives in a roomy cache. */
static void test_preemption_keeps_tokens(void **state)
{
    (void)state;
    enum { N = 6, CTX = 128 };
    engine_model *m;
    char err[256];
    assert_int_equal(engine_model_open(&m, STORIES, err, sizeof err), 0);
    int32_t ids[N][256];
    int lens[N];
    engine_gen_params params[N];
    for (int i = 0; i < N; i++) {
        lens[i] = tokenize(m, prompts[i], ids[i], 256);
        params[i] = params_for(i);
        params[i].max_tokens = 60 + 5 * i;
        params[i].ignore_eos = true;
        params[i].stop[0] = NULL;
    }
    outcome roomy[N] = {0}, tight[N] = {0};
    engine_batch_options o = {.n_ctx = CTX, .max_seqs = N, .step_tokens = 16, .n_threads = 2};
    engine_batch *b = engine_batch_create(m, &o, err, sizeof err);
    run_all(b, ids, lens, params, roomy, N);
    assert_int_equal(engine_batch_get_stats(b).preemptions, 0);
    engine_batch_free(b);

    o.kv_cache_bytes = engine_kv_bytes_per_token(m, KV_F16) * CTX;
    b = engine_batch_create(m, &o, err, sizeof err);
    assert_non_null(b);
    assert_int_equal(engine_batch_get_stats(b).kv_blocks_total, CTX / 16);
    run_all(b, ids, lens, params, tight, N);
    engine_batch_stats st = engine_batch_get_stats(b);
    assert_true(st.preemptions >= 3);
    assert_int_equal(st.kv_blocks_used, 0);   /* everything given back */
    for (int i = 0; i < N; i++) {
        assert_int_equal(tight[i].r.n_generated, params[i].max_tokens);
        assert_same_outcome(&tight[i], &roomy[i]);
    }
    engine_batch_free(b);
    /* less than one context is refused, naming the least that works */
    o.kv_cache_bytes = engine_kv_bytes_per_token(m, KV_F16) * (CTX - 16);
    assert_null(engine_batch_create(m, &o, err, sizeof err));
    assert_non_null(strstr(err, "one context of 128 tokens"));
    free_outcomes(roomy, N);
    free_outcomes(tight, N);
    engine_model_close(m);
}

static const char system_prompt[] =
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the sun. "
    "One day, she saw a big red ball in the park. She wanted to play with it, but it was too high. "
    "She asked her mom for help, and her mom gave her a hug.";

/* A prompt of system_prompt followed by `rest` (tokens into ids, count returned). */
static int system_and(engine_model *m, const char *rest, int32_t *ids)
{
    char text[1024];
    snprintf(text, sizeof text, "%s%s", system_prompt, rest);
    return tokenize(m, text, ids, 256);
}

static int common_prefix(const int32_t *a, int na, const int32_t *b, int nb)
{
    int n = 0;
    while (n < na && n < nb && a[n] == b[n]) n++;
    return n;
}

/* A second request with the same long system prompt reads only what follows the
 * blocks the first one filled, and says so in n_cached and in the counters; its tokens
 * are those of a cold run. The same request again reuses all but its last block. */
static void test_prefix_cache_shared_system_prompt(void **state)
{
    (void)state;
    engine_model *m;
    char err[256];
    assert_int_equal(engine_model_open(&m, STORIES, err, sizeof err), 0);
    int32_t ids[2][256];
    int lens[2] = {system_and(m, " Lily said", ids[0]), system_and(m, " Then Tom asked", ids[1])};
    assert_true(lens[0] > 64);
    engine_gen_params params[2] = {params_for(0), params_for(1)};
    engine_batch_options o = {.n_ctx = 256, .max_seqs = 4, .step_tokens = 32, .n_threads = 2};

    outcome cold[1] = {0};
    engine_batch *b = engine_batch_create(m, &o, err, sizeof err);
    run_all(b, &ids[1], &lens[1], &params[1], cold, 1);
    assert_int_equal(cold[0].r.n_cached, 0);
    engine_batch_free(b);

    b = engine_batch_create(m, &o, err, sizeof err);
    outcome first[1] = {0}, second[1] = {0}, again[1] = {0};
    run_all(b, &ids[0], &lens[0], &params[0], first, 1);
    engine_batch_stats before = engine_batch_get_stats(b);
    assert_true(before.kv_blocks_cached > 0);
    assert_int_equal(before.kv_blocks_used, 0);
    run_all(b, &ids[1], &lens[1], &params[1], second, 1);
    engine_batch_stats after = engine_batch_get_stats(b);
    int shared = common_prefix(ids[0], lens[0], ids[1], lens[1]);
    int expect = shared / 16 * 16;
    assert_true(expect >= 48);
    assert_int_equal(second[0].r.n_cached, expect);
    assert_int_equal(after.prefill_tokens - before.prefill_tokens, (uint64_t)(lens[1] - expect));
    assert_int_equal(after.prefix_hit_tokens - before.prefix_hit_tokens, (uint64_t)expect);
    assert_int_equal(after.prefix_lookup_tokens - before.prefix_lookup_tokens, (uint64_t)lens[1]);
    assert_same_outcome(&second[0], &cold[0]);
    /* the identical request: everything but the block holding its last token */
    run_all(b, &ids[1], &lens[1], &params[1], again, 1);
    assert_int_equal(again[0].r.n_cached, (lens[1] - 1) / 16 * 16);
    assert_same_outcome(&again[0], &cold[0]);
    engine_batch_free(b);
    free_outcomes(cold, 1);
    free_outcomes(first, 1);
    free_outcomes(second, 1);
    free_outcomes(again, 1);
    engine_model_close(m);
}

/* Turn 2 of a chat is turn 1's prompt, its answer and a new message: it reuses the
 * blocks of both the prompt and the answer, and answers as a cold run does. */
static void test_prefix_cache_multi_turn(void **state)
{
    (void)state;
    engine_model *m;
    char err[256];
    assert_int_equal(engine_model_open(&m, STORIES, err, sizeof err), 0);
    int32_t ids[2][256];
    int lens[2];
    lens[0] = system_and(m, " Lily said", ids[0]);
    engine_gen_params p = params_for(0);
    p.max_tokens = 40;
    p.ignore_eos = true;
    engine_batch_options o = {.n_ctx = 256, .max_seqs = 2, .step_tokens = 64, .n_threads = 2};
    engine_batch *b = engine_batch_create(m, &o, err, sizeof err);
    outcome turn1[1] = {0}, turn2[1] = {0}, cold[1] = {0};
    run_all(b, &ids[0], &lens[0], &p, turn1, 1);
    int n_answer = turn1[0].r.n_generated;
    memcpy(ids[1], ids[0], sizeof(int32_t) * (size_t)lens[0]);
    memcpy(ids[1] + lens[0], turn1[0].r.ids, sizeof(int32_t) * (size_t)n_answer);
    const char *next_message = " Then the dog ran";
    int n_more = engine_tokenize(m, next_message, strlen(next_message), false, false, ids[1] + lens[0] + n_answer, 32);
    lens[1] = lens[0] + n_answer + n_more;
    run_all(b, &ids[1], &lens[1], &p, turn2, 1);
    /* the cache held the prompt and every answer token but the last (never run) */
    int in_cache = lens[0] + n_answer - 1;
    assert_int_equal(turn2[0].r.n_cached, in_cache / 16 * 16);
    assert_true(turn2[0].r.n_cached > lens[0]);
    engine_batch_free(b);
    b = engine_batch_create(m, &o, err, sizeof err);
    run_all(b, &ids[1], &lens[1], &p, cold, 1);
    assert_same_outcome(&turn2[0], &cold[0]);
    engine_batch_free(b);
    free_outcomes(turn1, 1);
    free_outcomes(turn2, 1);
    free_outcomes(cold, 1);
    engine_model_close(m);
}

/* With f32 and q8_0 storage, a batch still gives what a session with the same storage
 * gives, and a blocks-full prompt still uses the prefix cache. */
static void test_other_kv_types(void **state)
{
    (void)state;
    enum { N = 4 };
    engine_model *m;
    char err[256];
    assert_int_equal(engine_model_open(&m, STORIES, err, sizeof err), 0);
    for (int t = KV_F32; t <= KV_Q8_0; t++) {
        int32_t ids[N][256];
        int lens[N];
        engine_gen_params params[N];
        outcome alone[N] = {0}, batched[N] = {0};
        for (int i = 0; i < N; i++) {
            lens[i] = i < 2 ? system_and(m, prompts[i], ids[i]) : tokenize(m, prompts[i], ids[i], 256);
            params[i] = params_for(i);
            engine_session *s = engine_session_create(m, &(engine_session_options){
                .n_ctx = 256, .n_threads = 2, .kv_dtype = (enum kv_dtype)t});
            assert_int_equal(engine_generate(s, ids[i], lens[i], &params[i], collect_token, &alone[i], &alone[i].r,
                                             err, sizeof err), 0);
            engine_session_free(s);
        }
        engine_batch *b = engine_batch_create(m, &(engine_batch_options){
            .n_ctx = 256, .max_seqs = N, .step_tokens = 24, .n_threads = 2, .kv_dtype = (enum kv_dtype)t},
            err, sizeof err);
        run_all(b, ids, lens, params, batched, N);
        for (int i = 0; i < N; i++)
            assert_same_outcome(&batched[i], &alone[i]);
        outcome reuse[1] = {0};
        run_all(b, &ids[1], &lens[1], &params[1], reuse, 1);
        assert_true(reuse[0].r.n_cached >= 48);
        assert_same_outcome(&reuse[0], &alone[1]);
        engine_batch_free(b);
        free_outcomes(alone, N);
        free_outcomes(batched, N);
        free_outcomes(reuse, 1);
    }
    engine_model_close(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_batch_equals_alone),
        cmocka_unit_test(test_batch_cancel_and_refusals),
        cmocka_unit_test(test_preemption_keeps_tokens),
        cmocka_unit_test(test_prefix_cache_shared_system_prompt),
        cmocka_unit_test(test_prefix_cache_multi_turn),
        cmocka_unit_test(test_other_kv_types),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
