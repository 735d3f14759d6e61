/* test_worker_request_map.c - a GenerateRequest off the wire turned into what the engine
 * takes (services/worker/request_map.h):
 *   - unset proto3 fields (0) give neutral sampling: top_p off, repetition penalty
 *     off, the worker's default max_tokens, the caller's seed;
 *   - set fields pass through; has_seed makes seed 0 a seed; out-of-range, non-finite and negative values are
 *     refused with a message naming the parameter;
 *   - stop strings: empty ones skipped, too many refused;
 *   - prompts: a raw prompt tokenizes as the engine tokenizes it (BOS as the model
 *     wants); chat messages render through the template; neither, or a message
 *     without a role, is refused.
 * The prompt checks use tests/data/models/stories260K.gguf.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "request_map.h"

#define MODEL_PATH "tests/data/models/stories260K.gguf"

static Citadel__GenerateRequest blank(void)
{
    Citadel__GenerateRequest r = CITADEL__GENERATE_REQUEST__INIT;
    return r;
}

static void unset_fields_are_neutral(void **state)
{
    (void)state;
    Citadel__GenerateRequest r = blank();
    engine_gen_params p;
    char err[256] = "";
    assert_int_equal(request_gen_params(&r, 1234, &p, err, sizeof err), 0);
    assert_true(p.sampling.temperature == 0.0f);   /* greedy */
    assert_true(p.sampling.top_p == 1.0f);
    assert_true(p.sampling.repeat_penalty == 1.0f);
    assert_int_equal(p.sampling.top_k, 0);
    assert_true(p.sampling.min_p == 0.0f);
    assert_int_equal(p.sampling.n_top_logprobs, 0);
    assert_int_equal(p.max_tokens, REQUEST_DEFAULT_MAX_TOKENS);
    assert_int_equal(p.sampling.seed, 1234);
    assert_null(p.stop[0]);
}

static void set_fields_pass_through(void **state)
{
    (void)state;
    Citadel__GenerateRequest r = blank();
    r.temperature = 0.7f;
    r.top_p = 0.9f;
    r.top_k = 40;
    r.min_p = 0.05f;
    r.presence_penalty = 0.5f;
    r.frequency_penalty = -0.5f;
    r.repetition_penalty = 1.1f;
    r.max_tokens = 17;
    r.seed = 99;
    r.logprobs = 1;
    r.top_logprobs = 5;
    engine_gen_params p;
    char err[256] = "";
    assert_int_equal(request_gen_params(&r, 1234, &p, err, sizeof err), 0);
    assert_true(p.sampling.temperature == 0.7f);
    assert_true(p.sampling.top_p == 0.9f);
    assert_int_equal(p.sampling.top_k, 40);
    assert_true(p.sampling.min_p == 0.05f);
    assert_true(p.sampling.presence_penalty == 0.5f);
    assert_true(p.sampling.frequency_penalty == -0.5f);
    assert_true(p.sampling.repeat_penalty == 1.1f);
    assert_int_equal(p.max_tokens, 17);
    assert_int_equal(p.sampling.seed, 99);
    assert_int_equal(p.sampling.n_top_logprobs, 5);
}

/* A client's seed 0 (has_seed) is used as given; without has_seed the caller's. */
static void seed_zero_is_a_seed_when_set(void **state)
{
    (void)state;
    Citadel__GenerateRequest r = blank();
    r.has_seed = 1;
    engine_gen_params p;
    char err[256] = "";
    assert_int_equal(request_gen_params(&r, 1234, &p, err, sizeof err), 0);
    assert_int_equal(p.sampling.seed, 0);
}

/* top_logprobs only counts when logprobs was asked for, as in OpenAI's API. */
static void top_logprobs_needs_logprobs(void **state)
{
    (void)state;
    Citadel__GenerateRequest r = blank();
    r.top_logprobs = 3;
    engine_gen_params p;
    char err[256] = "";
    assert_int_equal(request_gen_params(&r, 1, &p, err, sizeof err), 0);
    assert_int_equal(p.sampling.n_top_logprobs, 0);
}

/* Each bad request is refused, and the message names the parameter at fault. */
static void expect_refused(Citadel__GenerateRequest *r, const char *name)
{
    engine_gen_params p;
    char err[256] = "";
    assert_int_equal(request_gen_params(r, 1, &p, err, sizeof err), -1);
    assert_non_null(strstr(err, name));
}

static void out_of_range_values_are_refused(void **state)
{
    (void)state;
    Citadel__GenerateRequest r;
    r = blank(); r.temperature = -0.1f;           expect_refused(&r, "temperature");
    r = blank(); r.temperature = NAN;             expect_refused(&r, "temperature");
    r = blank(); r.top_p = 1.5f;                  expect_refused(&r, "top_p");
    r = blank(); r.min_p = -1.0f;                 expect_refused(&r, "min_p");
    r = blank(); r.presence_penalty = 3.0f;       expect_refused(&r, "presence_penalty");
    r = blank(); r.frequency_penalty = INFINITY;  expect_refused(&r, "frequency_penalty");
    r = blank(); r.repetition_penalty = -1.0f;    expect_refused(&r, "repetition_penalty");
    r = blank(); r.top_k = -1;                    expect_refused(&r, "top_k");
    r = blank(); r.max_tokens = -5;               expect_refused(&r, "max_tokens");
    r = blank(); r.logprobs = 1; r.top_logprobs = SAMPLE_MAX_TOP + 1; expect_refused(&r, "top_logprobs");
}

static void stop_strings(void **state)
{
    (void)state;
    char *stops[] = {"", "END", "\n\n"};
    Citadel__GenerateRequest r = blank();
    r.stop = stops;
    r.n_stop = 3;
    engine_gen_params p;
    char err[256] = "";
    assert_int_equal(request_gen_params(&r, 1, &p, err, sizeof err), 0);
    assert_string_equal(p.stop[0], "END");
    assert_string_equal(p.stop[1], "\n\n");
    assert_null(p.stop[2]);

    char *many[ENGINE_MAX_STOP];
    for (int i = 0; i < ENGINE_MAX_STOP; i++)
        many[i] = "x";
    r.stop = many;
    r.n_stop = ENGINE_MAX_STOP;
    expect_refused(&r, "stop");
}

static int open_model(void **state)
{
    engine_model *m = NULL;
    char err[256] = "";
    if (engine_model_open(&m, MODEL_PATH, err, sizeof err) != 0) {
        fprintf(stderr, "%s: %s\n", MODEL_PATH, err);
        return -1;
    }
    *state = m;
    return 0;
}

static int close_model(void **state)
{
    engine_model_close(*state);
    return 0;
}

static void raw_prompt_tokenizes_like_the_engine(void **state)
{
    engine_model *m = *state;
    const char *text = "Once upon a time";
    int32_t want[64];
    int n_want = engine_tokenize(m, text, strlen(text), engine_adds_bos(m), false, want, 64);
    assert_true(n_want > 0 && n_want <= 64);

    Citadel__GenerateRequest r = blank();
    r.prompt = (char *)text;
    int n = 0;
    char err[256] = "";
    int32_t *ids = request_prompt_ids(m, &r, &n, err, sizeof err);
    assert_non_null(ids);
    assert_int_equal(n, n_want);
    assert_memory_equal(ids, want, sizeof *ids * (size_t)n);
    free(ids);
}

static void chat_messages_render_through_the_template(void **state)
{
    engine_model *m = *state;
    Citadel__ChatMessage user = CITADEL__CHAT_MESSAGE__INIT;
    user.role = "user";
    user.content = "Hello";
    Citadel__ChatMessage *msgs[] = {&user};
    Citadel__GenerateRequest r = blank();
    r.messages = msgs;
    r.n_messages = 1;

    char *text = engine_render_chat(m, &(chat_message){"user", "Hello"}, 1, true);
    assert_non_null(text);
    int32_t want[512];
    int n_want = engine_tokenize(m, text, strlen(text), engine_adds_bos(m), true, want, 512);
    free(text);
    assert_true(n_want > 0 && n_want <= 512);

    int n = 0;
    char err[256] = "";
    int32_t *ids = request_prompt_ids(m, &r, &n, err, sizeof err);
    assert_non_null(ids);
    assert_int_equal(n, n_want);
    assert_memory_equal(ids, want, sizeof *ids * (size_t)n);
    free(ids);
}

static void missing_prompt_or_role_is_refused(void **state)
{
    engine_model *m = *state;
    Citadel__GenerateRequest r = blank();
    int n = 0;
    char err[256] = "";
    assert_null(request_prompt_ids(m, &r, &n, err, sizeof err));
    assert_non_null(strstr(err, "neither messages nor a prompt"));

    Citadel__ChatMessage nameless = CITADEL__CHAT_MESSAGE__INIT;
    nameless.content = "hi";
    Citadel__ChatMessage *msgs[] = {&nameless};
    r.messages = msgs;
    r.n_messages = 1;
    assert_null(request_prompt_ids(m, &r, &n, err, sizeof err));
    assert_non_null(strstr(err, "no role"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(unset_fields_are_neutral),
        cmocka_unit_test(set_fields_pass_through),
        cmocka_unit_test(seed_zero_is_a_seed_when_set),
        cmocka_unit_test(top_logprobs_needs_logprobs),
        cmocka_unit_test(out_of_range_values_are_refused),
        cmocka_unit_test(stop_strings),
    };
    const struct CMUnitTest model_tests[] = {
        cmocka_unit_test(raw_prompt_tokenizes_like_the_engine),
        cmocka_unit_test(chat_messages_render_through_the_template),
        cmocka_unit_test(missing_prompt_or_role_is_refused),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    failed += cmocka_run_group_tests(model_tests, open_model, close_model);
    return failed;
}
