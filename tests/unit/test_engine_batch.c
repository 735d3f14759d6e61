/* test_engine_batch.c - continuous batching (engine.h, "batches"): generations run
 * together give exactly the tokens and text each gives alone through engine_generate,
 * whatever joins when, with prompts fed in small chunks; cancel and refusals.
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
#define N_GEN 6

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
                                     "Hello", "One day, a little bird", "Sam had a red ball. He"};

static engine_gen_params params_for(int i)
{
    engine_gen_params p = engine_default_gen_params();
    p.max_tokens = 20 + 7 * i;
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
    /* a budget of 5 tokens a step: prompts arrive in chunks; two join later */
    engine_batch *b = engine_batch_create(m, &(engine_batch_options){.n_ctx = 256, .max_seqs = 8,
                                                                     .step_tokens = 5, .n_threads = 2});
    assert_non_null(b);
    int steps = 0;
    for (int i = 0; i < N_GEN || engine_batch_active(b) > 0; steps++) {
        if (i < N_GEN && (steps == 0 || steps == 3 || steps == 9)) {
            int join = steps == 0 ? 4 : 1;
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
    engine_batch *b = engine_batch_create(m, &(engine_batch_options){.n_ctx = 64, .max_seqs = 2, .n_threads = 1});
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_batch_equals_alone),
        cmocka_unit_test(test_batch_cancel_and_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
