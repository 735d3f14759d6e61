/* test_model.c - the engine end to end against llama.cpp's reference data
 * (tests/data/, copied from shared/golden; see its README):
 *   - stories260K (F32): every greedy id and the top-5 logits within 1e-2 for 48 steps
 *     (the largest gap seen is 5.4e-3 on logits near 18, 3e-4 relative: llama.cpp's
 *     attention rounds through f16 in places this engine cannot match bit for bit),
 *     the prompt tokenization, the greedy text, and the perplexities to 0.1%;
 *   - the synthetic Q8_0 / Q4_0 models: top logits within 0.05 (llama.cpp quantizes
 *     activations to 8 bits; so do we, but not identically), greedy ids where the gap
 *     between the first two logits exceeds that;
 *   - batched prefill gives the same logits as one token at a time, at every SIMD level;
 *   - SmolLM2-135M-Instruct answers a chat question sensibly (skipped, visibly, when
 *     var/models/ lacks it: `make model`).
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cpu/simd.h"
#include "engine.h"
#include "json_min.h"
#include "model/llama.h"

#define STORIES "tests/data/models/stories260K.gguf"
#define SMOLLM2 "var/models/SmolLM2-135M-Instruct.Q4_1.gguf"

/* Each line of a JSONL file, parsed; returns the count. */
static int read_jsonl(const char *path, json_value **out, int cap)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    static char line[1 << 16];
    int n = 0;
    while (n < cap && fgets(line, sizeof line, f)) {
        out[n] = json_parse(line);
        assert_non_null(out[n]);
        n++;
    }
    fclose(f);
    return n;
}

static engine_model *open_model(const char *path)
{
    engine_model *m = NULL;
    char err[512];
    int rc = engine_model_open(&m, path, err, sizeof err);
    if (rc) fprintf(stderr, "open %s: %s\n", path, err);
    assert_int_equal(rc, 0);
    return m;
}

static int argmax(const float *x, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

/* Runs the reference's prompt, then greedy steps, comparing each step's top logits
 * with tolerance tol. Returns the greedy ids it produced (caller frees). */
static double worst_gap;   /* the largest logit gap a check saw, for the messages */

static void check_greedy_case(engine_model *m, const json_value *c, double tol, bool strict_ids,
                              int threads, enum kv_dtype kv_dtype)
{
    const json_value *pids = json_get(c, "prompt_ids"), *steps = json_get(c, "steps");
    const char *prompt = json_get(c, "prompt")->string;
    int V = engine_n_vocab(m);
    int32_t ids[512];
    int n = engine_tokenize(m, prompt, strlen(prompt), true, false, ids, 512);
    assert_int_equal(n, (int)pids->n);
    for (int i = 0; i < n; i++)
        assert_int_equal(ids[i], (int)pids->items[i]->number);

    engine_session *s = engine_session_create(m, &(engine_session_options){.n_ctx = 256, .n_threads = threads,
                                                                           .kv_dtype = kv_dtype});
    assert_non_null(s);
    float *logits = malloc(sizeof(float) * V);
    char err[256];
    assert_int_equal(engine_session_eval(s, ids, n, logits, false, err, sizeof err), 0);
    for (size_t step = 0; step < steps->n; step++) {
        const json_value *top = json_get(steps->items[step], "top");
        int ref_id = (int)top->items[0]->items[0]->number;
        double gap = top->items[0]->items[1]->number - top->items[1]->items[1]->number;
        for (size_t k = 0; k < top->n; k++) {
            int id = (int)top->items[k]->items[0]->number;
            double want = top->items[k]->items[1]->number;
            if (fabs(logits[id] - want) > worst_gap) worst_gap = fabs(logits[id] - want);
            if (fabs(logits[id] - want) > tol)
                fail_msg("'%s' step %zu: logit[%d] = %f, reference %f (tol %g)", prompt, step, id,
                         logits[id], want, tol);
        }
        int got = argmax(logits, V);
        if (got != ref_id && (strict_ids || gap > tol))
            fail_msg("'%s' step %zu: greedy id %d, reference %d (gap %f)", prompt, step, got, ref_id, gap);
        int32_t next = ref_id;  /* follow the reference so one near-tie cannot derail the rest */
        assert_int_equal(engine_session_eval(s, &next, 1, logits, false, err, sizeof err), 0);
    }
    free(logits);
    engine_session_free(s);
}

static void test_stories_greedy_matches_reference(void **state)
{
    (void)state;
    json_value *cases[64];
    int n = read_jsonl("tests/data/stories260K-generate-shared.jsonl", cases, 64);
    assert_true(n > 0);
    engine_model *m = open_model(STORIES);
    for (int i = 0; i < n; i++) {
        check_greedy_case(m, cases[i], 1e-2, true, 1 + i % 2, KV_F16);
        json_free(cases[i]);
    }
    engine_model_close(m);
}

/* The other KV storage types against the same reference (made with an f16 cache): f32
 * within 0.05 (it lacks the reference's f16 rounding: gaps up to 0.013 seen); q8_0, which
 * rounds keys and values to 8 bits (in groups of 8 here: this model's head size), within
 * 0.5 (0.44 seen on logits near 10), with the greedy ids wherever the top two logits are
 * further apart than that. */
static void test_stories_kv_types_near_reference(void **state)
{
    (void)state;
    json_value *cases[64];
    int n = read_jsonl("tests/data/stories260K-generate-shared.jsonl", cases, 64);
    assert_true(n > 0);
    engine_model *m = open_model(STORIES);
    double f32_gap = 0, q8_gap = 0;
    for (int i = 0; i < n; i++) {
        worst_gap = 0;
        check_greedy_case(m, cases[i], 0.05, false, 2, KV_F32);
        f32_gap = fmax(f32_gap, worst_gap);
        worst_gap = 0;
        check_greedy_case(m, cases[i], 0.5, false, 2, KV_Q8_0);
        q8_gap = fmax(q8_gap, worst_gap);
        json_free(cases[i]);
    }
    fprintf(stderr, "largest logit gap to the reference: f32 %.4f, q8_0 %.4f\n", f32_gap, q8_gap);
    assert_true(q8_gap > f32_gap);   /* q8_0 really is stored in 8 bits */
    engine_model_close(m);
}

/* The whole greedy continuation through engine_generate, as text. */
static void test_stories_greedy_text(void **state)
{
    (void)state;
    json_value *cases[64];
    int n = read_jsonl("tests/data/stories260K-generate-shared.jsonl", cases, 64);
    engine_model *m = open_model(STORIES);
    engine_session *s = engine_session_create(m, &(engine_session_options){.n_ctx = 256, .n_threads = 2});
    for (int i = 0; i < n; i++) {
        const json_value *c = cases[i], *pids = json_get(c, "prompt_ids");
        int32_t ids[256];
        for (size_t k = 0; k < pids->n; k++) ids[k] = (int32_t)pids->items[k]->number;
        engine_gen_params p = engine_default_gen_params();
        p.sampling.temperature = 0;
        p.max_tokens = (int)json_get(c, "steps")->n;
        engine_gen_result r;
        char err[256];
        assert_int_equal(engine_generate(s, ids, (int)pids->n, &p, NULL, NULL, &r, err, sizeof err), 0);
        const char *want = json_get(c, "greedy_text")->string;
        if (strncmp(r.text, want, strlen(want)) != 0 && strncmp(want, r.text, r.text_len) != 0)
            fail_msg("greedy text for '%s':\n got  '%s'\n want '%s'", json_get(c, "prompt")->string, r.text, want);
        engine_gen_result_free(&r);
        json_free(cases[i]);
    }
    engine_session_free(s);
    engine_model_close(m);
}

static double perplexity_of(engine_model *m, int n_tokens)
{
    FILE *f = fopen("tests/data/ppl-text.txt", "r");
    assert_non_null(f);
    static char text[8192];
    size_t len = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    int32_t ids[4096];
    int n = engine_tokenize(m, text, len, true, false, ids, 4096);
    assert_true(n >= n_tokens);
    int V = engine_n_vocab(m);
    float *logits = malloc(sizeof(float) * (size_t)V * n_tokens);
    engine_session *s = engine_session_create(m, &(engine_session_options){.n_ctx = n_tokens, .n_threads = 2, .n_batch = 64});
    char err[256];
    assert_int_equal(engine_session_eval(s, ids, n_tokens, logits, true, err, sizeof err), 0);
    double nll = 0;
    for (int t = 0; t + 1 < n_tokens; t++) {
        const float *l = logits + (size_t)t * V;
        double max = l[argmax(l, V)], sum = 0;
        for (int i = 0; i < V; i++) sum += exp(l[i] - max);
        nll -= l[ids[t + 1]] - max - log(sum);
    }
    free(logits);
    engine_session_free(s);
    return exp(nll / (n_tokens - 1));
}

static void test_stories_perplexity(void **state)
{
    (void)state;
    engine_model *m = open_model(STORIES);
    double p128 = perplexity_of(m, 128), p256 = perplexity_of(m, 256);
    printf("stories260K perplexity: 128 tokens %.6f (ref 3.786303), 256 tokens %.6f (ref 3.725226)\n",
           p128, p256);
    assert_true(fabs(p128 / 3.786303 - 1) < 1e-3);
    assert_true(fabs(p256 / 3.725226 - 1) < 1e-3);
    engine_model_close(m);
}

static void check_synth(const char *file)
{
    json_value *cases[16];
    int n = read_jsonl("tests/data/synth-tiny-generate.jsonl", cases, 16), checked = 0;
    char path[256];
    snprintf(path, sizeof path, "tests/data/models/%s", file);
    engine_model *m = open_model(path);
    for (int i = 0; i < n; i++) {
        if (!strcmp(json_get(cases[i], "model")->string, file)) {
            check_greedy_case(m, cases[i], 0.05, false, 2, KV_F16);
            checked++;
        }
        json_free(cases[i]);
    }
    assert_true(checked > 0);
    engine_model_close(m);
}

static void test_synth_q8_0(void **state) { (void)state; check_synth("synth-tiny-q8_0.gguf"); }
static void test_synth_q4_0(void **state) { (void)state; check_synth("synth-tiny-q4_0.gguf"); }

/* Prefill in one batch and one token at a time give the same logits, at every SIMD
 * level the CPU has. */
static void check_batch_equals_sequential(const char *path, double tol)
{
    engine_model *m = open_model(path);
    int V = engine_n_vocab(m), n = 40;
    int32_t ids[40];
    for (int i = 0; i < n; i++) ids[i] = (int32_t)(3 + (i * 37) % (V - 3));
    float *a = malloc(sizeof(float) * V * n), *b = malloc(sizeof(float) * V);
    char err[256];
    for (int level = SIMD_SCALAR; level <= (int)simd_best_level(); level++) {
        simd_set_level((enum simd_level)level);
        engine_session *s = engine_session_create(m, &(engine_session_options){.n_ctx = 64, .n_threads = 2, .n_batch = 16});
        assert_int_equal(engine_session_eval(s, ids, n, a, true, err, sizeof err), 0);
        engine_session_reset(s);
        for (int t = 0; t < n; t++) {
            assert_int_equal(engine_session_eval(s, ids + t, 1, b, false, err, sizeof err), 0);
            for (int i = 0; i < V; i++)
                if (fabs(a[(size_t)t * V + i] - b[i]) > tol)
                    fail_msg("%s %s: token %d logit %d batched %f sequential %f", path,
                             simd_level_name((enum simd_level)level), t, i, a[(size_t)t * V + i], b[i]);
        }
        engine_session_free(s);
    }
    simd_set_level(simd_best_level());
    free(a);
    free(b);
    engine_model_close(m);
}

static void test_batched_prefill_equals_sequential(void **state)
{
    (void)state;
    check_batch_equals_sequential(STORIES, 1e-4);
    check_batch_equals_sequential("tests/data/models/synth-tiny-q4_0.gguf", 1e-3);
}

static void test_bad_model_files_refused(void **state)
{
    (void)state;
    engine_model *m = NULL;
    char err[512];
    assert_int_equal(engine_model_open(&m, "tests/data/no-such-model.gguf", err, sizeof err), -1);
    assert_null(m);
    assert_non_null(strstr(err, "no-such-model"));
    assert_int_equal(engine_model_open(&m, "tests/data/ppl-text.txt", err, sizeof err), -1);
    assert_null(m);
}

typedef struct collected {
    char text[4096];
    size_t len;
    int events;
} collected;

static bool collect_text(const engine_token_event *ev, void *user)
{
    collected *c = user;
    assert_true(c->len + (size_t)ev->text_len < sizeof c->text);
    memcpy(c->text + c->len, ev->text, (size_t)ev->text_len);
    c->len += (size_t)ev->text_len;
    c->text[c->len] = '\0';
    c->events++;
    return true;
}

/* Greedy generation with a stop string taken from the middle of the known greedy text:
 * the text ends right before it, finish is "stop", and the streamed pieces add up to
 * exactly the returned text (the stop string never leaks into the stream). */
static void test_stop_string_and_streaming(void **state)
{
    (void)state;
    json_value *cases[4];
    read_jsonl("tests/data/stories260K-generate-shared.jsonl", cases, 1);
    const char *greedy = json_get(cases[0], "greedy_text")->string;
    const json_value *pids = json_get(cases[0], "prompt_ids");
    int32_t ids[64];
    for (size_t k = 0; k < pids->n; k++) ids[k] = (int32_t)pids->items[k]->number;
    engine_model *m = open_model(STORIES);
    engine_session *s = engine_session_create(m, &(engine_session_options){.n_ctx = 256, .n_threads = 2});
    const char *stop = "play";  /* occurs twice; the first one ends the text */
    const char *at = strstr(greedy, stop);
    assert_non_null(at);
    engine_gen_params p = engine_default_gen_params();
    p.sampling.temperature = 0;
    p.max_tokens = 48;
    p.stop[0] = stop;
    engine_gen_result r;
    collected c = {0};
    char err[256];
    assert_int_equal(engine_generate(s, ids, (int)pids->n, &p, collect_text, &c, &r, err, sizeof err), 0);
    assert_int_equal(r.finish, ENGINE_FINISH_STOP);
    assert_int_equal(r.text_len, (size_t)(at - greedy));
    assert_memory_equal(r.text, greedy, r.text_len);
    assert_int_equal(c.len, r.text_len);
    assert_memory_equal(c.text, r.text, r.text_len);
    engine_gen_result_free(&r);

    /* Without the stop string, the stream equals the full greedy text; the second run
     * reuses the cached prompt. */
    p.stop[0] = NULL;
    memset(&c, 0, sizeof c);
    assert_int_equal(engine_generate(s, ids, (int)pids->n, &p, collect_text, &c, &r, err, sizeof err), 0);
    assert_true(r.n_cached > 0);
    assert_int_equal(r.finish, ENGINE_FINISH_LENGTH);
    assert_string_equal(c.text, greedy);
    assert_string_equal(r.text, greedy);
    engine_gen_result_free(&r);
    engine_session_free(s);
    engine_model_close(m);
    json_free(cases[0]);
}

/* A random-weight model written by the bench's writer loads and generates. */
static void test_random_model_roundtrip(void **state)
{
    (void)state;
    engine_model_shape shape = {"tiny-test", 300, 64, 2, 4, 2, 128, 256, true};
    const char *path = "build/test-random-model.gguf";
    enum tensor_type types[] = {TENSOR_Q8_0, TENSOR_Q4_0, TENSOR_Q4_1, TENSOR_F16};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        char err[512];
        assert_int_equal(engine_write_random_model(path, &shape, types[i], 1, err, sizeof err), 0);
        engine_model *m = open_model(path);
        engine_model_info info = engine_model_get_info(m);
        assert_int_equal(info.n_vocab, 300);
        assert_int_equal(info.n_layers, 2);
        assert_string_equal(info.weight_type, tensor_type_info(types[i])->name);
        engine_session *s = engine_session_create(m, &(engine_session_options){.n_ctx = 64, .n_threads = 2});
        int32_t ids[16];
        int n = engine_tokenize(m, "hello", 5, true, false, ids, 16);
        assert_true(n > 1);
        engine_gen_params p = engine_default_gen_params();
        p.sampling.temperature = 0;
        p.max_tokens = 8;
        p.ignore_eos = true;
        engine_gen_result r;
        assert_int_equal(engine_generate(s, ids, n, &p, NULL, NULL, &r, err, sizeof err), 0);
        assert_int_equal(r.n_generated, 8);
        engine_gen_result_free(&r);
        engine_session_free(s);
        engine_model_close(m);
    }
    remove(path);
}

static bool smollm2_present(void)
{
    FILE *f = fopen(SMOLLM2, "rb");
    if (f) fclose(f);
    else printf("SKIP: " SMOLLM2 " not present (run make model)\n");
    return f != NULL;
}

static void test_smollm2_chat_answers_capital(void **state)
{
    (void)state;
    if (!smollm2_present()) skip();
    engine_model *m = open_model(SMOLLM2);
    /* Asked bare, "What is the capital of France?", this Q4_1 file starts listing
     * Parisian landmarks in French ("L'Étoile, la ...") under llama.cpp as it does here
     * (same prompt ids, checked side by side); asked for a sentence, it answers. */
    chat_message msg = {"user", "What is the capital of France? Answer in one sentence."};
    char *prompt = engine_render_chat(m, &msg, 1, true);
    assert_non_null(prompt);
    int32_t ids[512];
    int n = engine_tokenize(m, prompt, strlen(prompt), engine_adds_bos(m), true, ids, 512);
    assert_true(n > 0 && n < 512);
    engine_session *s = engine_session_create(m, &(engine_session_options){.n_ctx = 512, .n_threads = 2});
    engine_gen_params p = engine_default_gen_params();
    p.sampling.temperature = 0;
    p.max_tokens = 48;
    engine_gen_result r;
    char err[256];
    assert_int_equal(engine_generate(s, ids, n, &p, NULL, NULL, &r, err, sizeof err), 0);
    printf("SmolLM2: %s\n", r.text);
    assert_non_null(strstr(r.text, "Paris"));
    engine_gen_result_free(&r);
    engine_session_free(s);
    free(prompt);
    engine_model_close(m);
}

/* Several sequences run together in one batch (prefill of different lengths, then
 * decode steps, some sequences joining late) give bit for bit the logits each gets
 * alone: what continuous batching needs for batch invariance. Together they share one
 * paged cache of 4-token blocks, interleaved; alone each has a private one. */
static void check_batch_invariance(const char *path)
{
    gguf_file *f;
    llama_model *m;
    char err[256];
    assert_int_equal(gguf_open(&f, path, err, sizeof err), 0);
    assert_int_equal(llama_model_load(&m, f, err, sizeof err), 0);
    int V = m->hp.n_vocab;
    enum { N_SEQ = 4, STEPS = 6 };
    const int32_t prompts[N_SEQ][12] = {{1, 5, 9, 13}, {1, 200, 300, 77, 12, 9, 14, 100, 3, 4, 5, 6},
                                        {1, 42}, {1, 7, 7, 7, 7, 7, 7}};
    const int lens[N_SEQ] = {4, 12, 2, 7};
    float *alone = malloc(sizeof(float) * V * N_SEQ * (STEPS + 1));
    float *batched = malloc(sizeof(float) * V * N_SEQ * (STEPS + 1));
    /* alone: prompt, then STEPS tokens fed back (the argmax) */
    for (int i = 0; i < N_SEQ; i++) {
        llama_state *s = llama_state_create(m, 64, 16, 2);
        float *out = alone + (size_t)i * V * (STEPS + 1);
        assert_int_equal(llama_forward(s, prompts[i], lens[i], out, false), 0);
        for (int step = 0; step < STEPS; step++) {
            int32_t next = argmax(out + (size_t)step * V, V);
            assert_int_equal(llama_forward(s, &next, 1, out + (size_t)(step + 1) * V, false), 0);
        }
        llama_state_free(s);
    }
    /* batched: sequence 3 joins one step late; every step is one llama_forward_batch */
    llama_state *work = llama_workspace_create(m, 64, 32, 2);
    kv_cache_shape shape = llama_kv_shape(m, KV_F16, 4);
    kv_cache *cache = kv_cache_create(&shape, 64, err, sizeof err);
    assert_non_null(cache);
    kv_seq seq_kv[N_SEQ], *seq[N_SEQ];
    int done[N_SEQ] = {0};
    int32_t next[N_SEQ];
    for (int i = 0; i < N_SEQ; i++) {
        kv_seq_init(&seq_kv[i], cache);
        seq[i] = &seq_kv[i];
    }
    for (int round = 0; round <= STEPS + 1; round++) {
        llama_batch_seq b[N_SEQ];
        int n = 0;
        for (int i = 0; i < N_SEQ; i++) {
            bool late = i == 3 && round == 0;
            if (late || done[i] > STEPS) continue;
            float *out = batched + ((size_t)i * (STEPS + 1) + done[i]) * V;
            if (done[i] == 0)
                b[n++] = (llama_batch_seq){seq[i], prompts[i], lens[i], out, NULL};
            else
                b[n++] = (llama_batch_seq){seq[i], &next[i], 1, out, NULL};
            assert_int_equal(kv_seq_reserve(seq[i], seq[i]->n_tokens + b[n - 1].n), 0);
        }
        assert_int_equal(llama_forward_batch(work, b, n), 0);
        for (int i = 0; i < N_SEQ; i++) {
            bool ran = false;
            for (int j = 0; j < n; j++) ran |= b[j].kv == seq[i];
            if (!ran) continue;
            next[i] = argmax(batched + ((size_t)i * (STEPS + 1) + done[i]) * V, V);
            done[i]++;
        }
    }
    assert_memory_equal(alone, batched, sizeof(float) * V * N_SEQ * (STEPS + 1));
    /* refusals: the same sequence twice, more tokens than the workspace holds */
    llama_batch_seq twice[2] = {{seq[0], prompts[0], 1, NULL, NULL}, {seq[0], prompts[0], 1, NULL, NULL}};
    assert_int_equal(llama_forward_batch(work, twice, 2), -1);
    int32_t many[40] = {0};
    llama_batch_seq big = {seq[1], many, 40, NULL, NULL};
    assert_int_equal(kv_seq_reserve(seq[1], seq[1]->n_tokens + 40), 0);
    assert_int_equal(llama_forward_batch(work, &big, 1), -1);
    /* and positions without reserved blocks */
    llama_batch_seq unreserved = {seq[2], many, kv_seq_spare(seq[2]) + 1, NULL, NULL};
    assert_int_equal(llama_forward_batch(work, &unreserved, 1), -1);
    for (int i = 0; i < N_SEQ; i++)
        kv_seq_release(seq[i]);
    assert_int_equal(kv_cache_get_stats(cache).used, 0);
    kv_cache_free(cache);
    llama_state_free(work);
    free(alone);
    free(batched);
    llama_model_free(m);
    gguf_close(f);
}

static void test_batch_invariance(void **state)
{
    (void)state;
    check_batch_invariance("tests/data/models/synth-tiny-q8_0.gguf");
    check_batch_invariance("tests/data/models/synth-tiny-q4_0.gguf");
    check_batch_invariance(STORIES);
    for (int level = SIMD_SCALAR; level < (int)simd_best_level(); level++) {
        simd_set_level((enum simd_level)level);
        check_batch_invariance("tests/data/models/synth-tiny-q8_0.gguf");
    }
    simd_set_level(simd_best_level());
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stories_greedy_matches_reference),
        cmocka_unit_test(test_stories_kv_types_near_reference),
        cmocka_unit_test(test_stories_greedy_text),
        cmocka_unit_test(test_stories_perplexity),
        cmocka_unit_test(test_synth_q8_0),
        cmocka_unit_test(test_synth_q4_0),
        cmocka_unit_test(test_batched_prefill_equals_sequential),
        cmocka_unit_test(test_batch_invariance),
        cmocka_unit_test(test_bad_model_files_refused),
        cmocka_unit_test(test_stop_string_and_streaming),
        cmocka_unit_test(test_random_model_roundtrip),
        cmocka_unit_test(test_smollm2_chat_answers_capital),
    };
    return cmocka_run_group_tests_name("model", tests, NULL, NULL);
}
