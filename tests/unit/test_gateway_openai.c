/* test_gateway_openai.c - the OpenAI-compatible JSON of the gateway
 * (services/gateway/gw_openai.c): request parsing with every parameter, strict type and
 * range errors naming the parameter, and the shapes of responses, SSE chunks, errors
 * and the model list. Outputs are parsed back with jansson and checked field by field. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "gw_openai.h"

/* Parses s and expects failure on param with a 400; returns the error for more checks. */
static gw_error expect_error(enum gw_kind kind, const char *s, const char *param)
{
    gw_request r;
    gw_error e = {0};
    int rc = gw_request_parse(kind, s, strlen(s), &r, &e);
    if (rc != -1) fail_msg("accepted: %s", s);
    assert_int_equal(e.status, 400);
    assert_string_equal(e.type, "invalid_request_error");
    if (param == NULL) assert_null(e.param);
    else {
        if (e.param == NULL) fail_msg("no param for %s (%s)", s, e.message);
        assert_string_equal(e.param, param);
    }
    assert_true(strlen(e.message) > 0);
    return e;
}

static void test_chat_all_parameters(void **state)
{
    (void)state;
    const char *body =
        "{\"model\":\"m1\",\"messages\":[{\"role\":\"developer\",\"content\":\"be brief\"},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"hel\"},{\"type\":\"text\",\"text\":\"lo\"}]},"
        "{\"role\":\"assistant\",\"content\":null}],"
        "\"stream\":true,\"stream_options\":{\"include_usage\":true},\"max_tokens\":7,"
        "\"max_completion_tokens\":9,\"temperature\":0,\"top_p\":0.5,\"top_k\":3,\"min_p\":0.1,"
        "\"seed\":-1,\"stop\":[\"a\",\"bc\"],\"presence_penalty\":-2,\"frequency_penalty\":1.5,"
        "\"repetition_penalty\":1.1,\"logprobs\":true,\"top_logprobs\":2,\"user\":\"u\",\"n\":1,"
        "\"unknown_field\":{\"ignored\":true}}";
    gw_request r;
    gw_error e;
    assert_int_equal(gw_request_parse(GW_KIND_CHAT, body, strlen(body), &r, &e), 0);
    assert_string_equal(r.model, "m1");
    assert_int_equal(r.n_messages, 3);
    assert_string_equal(r.messages[0].role, "system");
    assert_string_equal(r.messages[1].content, "hello");
    assert_string_equal(r.messages[2].content, "");
    assert_true(r.stream && r.include_usage);
    assert_true(r.has_max_tokens);
    assert_int_equal(r.max_tokens, 9);
    assert_true(r.has_temperature && r.temperature == 0.0f);
    assert_true(r.has_top_p && fabsf(r.top_p - 0.5f) < 1e-6f);
    assert_true(r.has_top_k && r.top_k == 3);
    assert_true(r.has_min_p && r.has_presence_penalty && r.has_frequency_penalty && r.has_repetition_penalty);
    assert_true(r.has_seed && r.seed == UINT64_MAX);
    assert_int_equal(r.n_stop, 2);
    assert_string_equal(r.stop[1], "bc");
    assert_true(r.logprobs);
    assert_int_equal(r.top_logprobs, 2);
    assert_string_equal(r.user, "u");
    gw_request_free(&r);
}

static void test_chat_defaults_are_unset(void **state)
{
    (void)state;
    const char *body = "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
                       "\"temperature\":null,\"stop\":\"x\"}";
    gw_request r;
    gw_error e;
    assert_int_equal(gw_request_parse(GW_KIND_CHAT, body, strlen(body), &r, &e), 0);
    assert_false(r.stream || r.include_usage || r.has_max_tokens || r.has_temperature ||
                 r.has_top_p || r.has_top_k || r.has_min_p || r.has_seed || r.logprobs);
    assert_int_equal(r.n_stop, 1);
    assert_string_equal(r.stop[0], "x");
    gw_request_free(&r);
}

static void test_completion_prompt_forms(void **state)
{
    (void)state;
    gw_request r;
    gw_error e;
    const char *a = "{\"model\":\"m\",\"prompt\":\"once\",\"logprobs\":3,\"max_tokens\":4.0}";
    assert_int_equal(gw_request_parse(GW_KIND_COMPLETION, a, strlen(a), &r, &e), 0);
    assert_string_equal(r.prompt, "once");
    assert_true(r.logprobs);
    assert_int_equal(r.top_logprobs, 3);
    assert_int_equal(r.max_tokens, 4);
    gw_request_free(&r);
    const char *b = "{\"model\":\"m\",\"prompt\":[\"upon\"]}";
    assert_int_equal(gw_request_parse(GW_KIND_COMPLETION, b, strlen(b), &r, &e), 0);
    assert_string_equal(r.prompt, "upon");
    gw_request_free(&r);
    expect_error(GW_KIND_COMPLETION, "{\"model\":\"m\",\"prompt\":[\"a\",\"b\"]}", "prompt");
    expect_error(GW_KIND_COMPLETION, "{\"model\":\"m\",\"prompt\":[1,2]}", "prompt");
    expect_error(GW_KIND_COMPLETION, "{\"model\":\"m\",\"prompt\":5}", "prompt");
    expect_error(GW_KIND_COMPLETION, "{\"model\":\"m\"}", "prompt");
    expect_error(GW_KIND_COMPLETION, "{\"model\":\"m\",\"prompt\":\"a\",\"logprobs\":true}", "logprobs");
    expect_error(GW_KIND_COMPLETION, "{\"model\":\"m\",\"prompt\":\"a\",\"logprobs\":6}", "logprobs");
    expect_error(GW_KIND_COMPLETION, "{\"model\":\"m\",\"prompt\":\"a\",\"echo\":true}", "echo");
    expect_error(GW_KIND_COMPLETION, "{\"model\":\"m\",\"prompt\":\"a\",\"best_of\":2}", "best_of");
}

#define CHAT(extra) "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]" extra "}"

static void test_wrong_types_name_the_parameter(void **state)
{
    (void)state;
    static const struct { const char *body, *param; } cases[] = {
        {CHAT(",\"temperature\":\"0.5\""), "temperature"},
        {CHAT(",\"temperature\":true"), "temperature"},
        {CHAT(",\"top_p\":[1]"), "top_p"},
        {CHAT(",\"top_k\":2.5"), "top_k"},
        {CHAT(",\"top_k\":\"3\""), "top_k"},
        {CHAT(",\"min_p\":{}"), "min_p"},
        {CHAT(",\"seed\":\"1\""), "seed"},
        {CHAT(",\"seed\":1.5"), "seed"},
        {CHAT(",\"max_tokens\":\"10\""), "max_tokens"},
        {CHAT(",\"max_completion_tokens\":false"), "max_completion_tokens"},
        {CHAT(",\"stream\":1"), "stream"},
        {CHAT(",\"stream\":\"true\""), "stream"},
        {CHAT(",\"stream_options\":true"), "stream_options"},
        {CHAT(",\"stream_options\":{\"include_usage\":1}"), "stream_options.include_usage"},
        {CHAT(",\"stop\":5"), "stop"},
        {CHAT(",\"stop\":[\"a\",5]"), "stop"},
        {CHAT(",\"presence_penalty\":\"x\""), "presence_penalty"},
        {CHAT(",\"frequency_penalty\":null,\"repetition_penalty\":\"x\""), "repetition_penalty"},
        {CHAT(",\"frequency_penalty\":[]"), "frequency_penalty"},
        {CHAT(",\"logprobs\":1"), "logprobs"},
        {CHAT(",\"logprobs\":true,\"top_logprobs\":\"2\""), "top_logprobs"},
        {CHAT(",\"user\":7"), "user"},
        {CHAT(",\"n\":\"2\""), "n"},
        {"{\"model\":5,\"messages\":[]}", "model"},
        {"{\"model\":\"m\",\"messages\":{}}", "messages"},
        {"{\"model\":\"m\",\"messages\":[\"hi\"]}", "messages"},
        {"{\"model\":\"m\",\"messages\":[{\"role\":1,\"content\":\"x\"}]}", "messages"},
        {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":5}]}", "messages"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        gw_error e = expect_error(GW_KIND_CHAT, cases[i].body, cases[i].param);
        assert_non_null(strstr(e.message, cases[i].param));
    }
}

static void test_ranges_and_missing(void **state)
{
    (void)state;
    static const struct { const char *body, *param; } cases[] = {
        {CHAT(",\"temperature\":2.5"), "temperature"},
        {CHAT(",\"temperature\":-0.1"), "temperature"},
        {CHAT(",\"top_p\":1.01"), "top_p"},
        {CHAT(",\"top_k\":-2"), "top_k"},
        {CHAT(",\"min_p\":-1"), "min_p"},
        {CHAT(",\"max_tokens\":0"), "max_tokens"},
        {CHAT(",\"max_tokens\":3000000000"), "max_tokens"},
        {CHAT(",\"presence_penalty\":3"), "presence_penalty"},
        {CHAT(",\"frequency_penalty\":-2.5"), "frequency_penalty"},
        {CHAT(",\"repetition_penalty\":0"), "repetition_penalty"},
        {CHAT(",\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]"), "stop"},
        {CHAT(",\"stop\":\"\""), "stop"},
        {CHAT(",\"logprobs\":true,\"top_logprobs\":21"), "top_logprobs"},
        {CHAT(",\"top_logprobs\":2"), "top_logprobs"},
        {CHAT(",\"n\":0"), "n"},
        {"{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", "model"},
        {"{\"model\":\"\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", "model"},
        {"{\"model\":\"m\"}", "messages"},
        {"{\"model\":\"m\",\"messages\":[]}", "messages"},
        {"{\"model\":\"m\",\"messages\":[{\"role\":\"tool\",\"content\":\"x\"}]}", "messages"},
        {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\"}]}]}", "messages"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        expect_error(GW_KIND_CHAT, cases[i].body, cases[i].param);
}

static void test_n_greater_than_one_is_clear(void **state)
{
    (void)state;
    gw_error e = expect_error(GW_KIND_CHAT, CHAT(",\"n\":2"), "n");
    assert_string_equal(e.code, "unsupported_value");
    assert_non_null(strstr(e.message, "not supported"));
}

static void test_malformed_json(void **state)
{
    (void)state;
    gw_error e = expect_error(GW_KIND_CHAT, "{\"model\":", NULL);
    assert_string_equal(e.code, "invalid_json");
    expect_error(GW_KIND_CHAT, "[1,2]", NULL);
    expect_error(GW_KIND_CHAT, "", NULL);
    expect_error(GW_KIND_CHAT, CHAT("") "trailing", NULL);
    expect_error(GW_KIND_CHAT, "{\"model\":\"a\",\"model\":\"b\"}", NULL);   /* duplicate keys */
    expect_error(GW_KIND_CHAT, "{\"model\":\"a\\u0000b\"}", NULL);           /* NUL in string */
    /* Invalid UTF-8 inside a string. */
    expect_error(GW_KIND_CHAT, "{\"model\":\"\xff\xfe\"}", NULL);
}

/* ---- responses ---- */

static json_t *load(const char *s, size_t len)
{
    json_error_t err;
    json_t *v = json_loadb(s, len, 0, &err);
    if (v == NULL) fail_msg("invalid JSON (%s): %.*s", err.text, (int)len, s);
    return v;
}

/* Strips "data: " and "\n\n" and parses the event's JSON. */
static json_t *load_sse(const char *s, size_t len)
{
    assert_true(len > 8);
    assert_memory_equal(s, "data: ", 6);
    assert_memory_equal(s + len - 2, "\n\n", 2);
    assert_int_equal(strlen(s), len);
    return load(s + 6, len - 8);
}

static const gw_response_meta chat_meta = {GW_KIND_CHAT, "chatcmpl-1", 1700000000, "m1", false};
static const gw_response_meta text_meta = {GW_KIND_COMPLETION, "cmpl-1", 1700000000, "m1", true};

static void test_chat_chunks(void **state)
{
    (void)state;
    size_t n;
    char *s = gw_sse_chunk(&chat_meta, true, "He", 2, NULL, NULL, 0, &n);
    json_t *v = load_sse(s, n);
    assert_string_equal(json_string_value(json_object_get(v, "object")), "chat.completion.chunk");
    assert_string_equal(json_string_value(json_object_get(v, "id")), "chatcmpl-1");
    assert_int_equal(json_integer_value(json_object_get(v, "created")), 1700000000);
    assert_string_equal(json_string_value(json_object_get(v, "model")), "m1");
    assert_null(json_object_get(v, "usage"));   /* only with include_usage */
    json_t *c = json_array_get(json_object_get(v, "choices"), 0);
    assert_int_equal(json_integer_value(json_object_get(c, "index")), 0);
    json_t *d = json_object_get(c, "delta");
    assert_string_equal(json_string_value(json_object_get(d, "role")), "assistant");
    assert_string_equal(json_string_value(json_object_get(d, "content")), "He");
    assert_true(json_is_null(json_object_get(c, "finish_reason")));
    assert_true(json_is_null(json_object_get(c, "logprobs")));
    json_decref(v);
    free(s);

    /* The last chunk: no role, finish_reason set; invalid UTF-8 becomes U+FFFD. */
    s = gw_sse_chunk(&chat_meta, false, "\xe2\x82", 2, "stop", NULL, 0, &n);
    v = load_sse(s, n);
    c = json_array_get(json_object_get(v, "choices"), 0);
    d = json_object_get(c, "delta");
    assert_null(json_object_get(d, "role"));
    assert_string_equal(json_string_value(json_object_get(d, "content")), "\xef\xbf\xbd\xef\xbf\xbd");
    assert_string_equal(json_string_value(json_object_get(c, "finish_reason")), "stop");
    json_decref(v);
    free(s);
}

static void test_chunk_logprobs_and_usage(void **state)
{
    (void)state;
    gw_top_logprob top[2] = {{"a", 1, -0.1f}, {"b", 1, -INFINITY}};
    gw_token_logprob t = {"a", 1, -0.1f, top, 2};
    size_t n;
    char *s = gw_sse_chunk(&chat_meta, false, "a", 1, NULL, &t, 1, &n);
    json_t *v = load_sse(s, n);
    json_t *lp = json_object_get(json_array_get(json_object_get(v, "choices"), 0), "logprobs");
    json_t *first = json_array_get(json_object_get(lp, "content"), 0);
    assert_string_equal(json_string_value(json_object_get(first, "token")), "a");
    assert_true(fabs(json_real_value(json_object_get(first, "logprob")) + 0.1) < 1e-6);
    assert_int_equal(json_integer_value(json_array_get(json_object_get(first, "bytes"), 0)), 'a');
    json_t *alts = json_object_get(first, "top_logprobs");
    assert_int_equal(json_array_size(alts), 2);
    assert_true(json_real_value(json_object_get(json_array_get(alts, 1), "logprob")) == -9999.0);
    json_decref(v);
    free(s);

    /* Completions with include_usage: chunks carry usage null, the last one the counts. */
    s = gw_sse_chunk(&text_meta, true, "x", 1, NULL, NULL, 0, &n);
    v = load_sse(s, n);
    assert_string_equal(json_string_value(json_object_get(v, "object")), "text_completion");
    assert_true(json_is_null(json_object_get(v, "usage")));
    assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(v, "choices"), 0), "text")), "x");
    json_decref(v);
    free(s);
    gw_usage u = {5, 3};
    s = gw_sse_usage_chunk(&text_meta, &u, &n);
    v = load_sse(s, n);
    assert_int_equal(json_array_size(json_object_get(v, "choices")), 0);
    json_t *usage = json_object_get(v, "usage");
    assert_int_equal(json_integer_value(json_object_get(usage, "prompt_tokens")), 5);
    assert_int_equal(json_integer_value(json_object_get(usage, "completion_tokens")), 3);
    assert_int_equal(json_integer_value(json_object_get(usage, "total_tokens")), 8);
    json_decref(v);
    free(s);
}

static void test_full_responses(void **state)
{
    (void)state;
    gw_usage u = {10, 2};
    size_t n;
    gw_logprobs_acc *acc = gw_logprobs_acc_new(GW_KIND_CHAT);
    gw_token_logprob t = {"Hi", 2, -0.5f, NULL, 0};
    assert_int_equal(gw_logprobs_acc_add(acc, &t, 0), 0);
    char *s = gw_completion_response(&chat_meta, "Hi!", 3, "length", &u, acc, &n);
    json_t *v = load(s, n);
    assert_string_equal(json_string_value(json_object_get(v, "object")), "chat.completion");
    json_t *c = json_array_get(json_object_get(v, "choices"), 0);
    json_t *m = json_object_get(c, "message");
    assert_string_equal(json_string_value(json_object_get(m, "role")), "assistant");
    assert_string_equal(json_string_value(json_object_get(m, "content")), "Hi!");
    assert_string_equal(json_string_value(json_object_get(c, "finish_reason")), "length");
    assert_int_equal(json_array_size(json_object_get(json_object_get(c, "logprobs"), "content")), 1);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(v, "usage"), "total_tokens")), 12);
    json_decref(v);
    free(s);
    gw_logprobs_acc_free(acc);

    acc = gw_logprobs_acc_new(GW_KIND_COMPLETION);
    gw_top_logprob top[1] = {{" a", 2, -0.2f}};
    gw_token_logprob t2 = {" a", 2, -0.2f, top, 1};
    gw_logprobs_acc_add(acc, &t2, 0);
    gw_logprobs_acc_add(acc, &t2, 2);
    s = gw_completion_response(&text_meta, " a a", 4, "stop", &u, acc, &n);
    v = load(s, n);
    c = json_array_get(json_object_get(v, "choices"), 0);
    assert_string_equal(json_string_value(json_object_get(c, "text")), " a a");
    json_t *lp = json_object_get(c, "logprobs");
    assert_int_equal(json_array_size(json_object_get(lp, "tokens")), 2);
    assert_int_equal(json_integer_value(json_array_get(json_object_get(lp, "text_offset"), 1)), 2);
    assert_non_null(json_object_get(json_array_get(json_object_get(lp, "top_logprobs"), 0), " a"));
    json_decref(v);
    free(s);
    gw_logprobs_acc_free(acc);

    s = gw_completion_response(&text_meta, "", 0, "stop", &u, NULL, &n);
    v = load(s, n);
    assert_true(json_is_null(json_object_get(json_array_get(json_object_get(v, "choices"), 0), "logprobs")));
    json_decref(v);
    free(s);
}

static void test_error_and_models_bodies(void **state)
{
    (void)state;
    gw_error e;
    gw_error_set(&e, 404, "invalid_request_error", "model", "model_not_found",
                 "The model '%s' does not exist", "x\"y");
    size_t n;
    char *s = gw_error_body(&e, &n);
    json_t *v = load(s, n);
    json_t *err = json_object_get(v, "error");
    assert_string_equal(json_string_value(json_object_get(err, "message")), "The model 'x\"y' does not exist");
    assert_string_equal(json_string_value(json_object_get(err, "type")), "invalid_request_error");
    assert_string_equal(json_string_value(json_object_get(err, "param")), "model");
    assert_string_equal(json_string_value(json_object_get(err, "code")), "model_not_found");
    json_decref(v);
    free(s);
    gw_error_set(&e, 503, "server_error", NULL, NULL, "no worker");
    s = gw_sse_error(&e, &n);
    v = load_sse(s, n);
    err = json_object_get(v, "error");
    assert_true(json_is_null(json_object_get(err, "param")));
    assert_true(json_is_null(json_object_get(err, "code")));
    json_decref(v);
    free(s);

    const char *models[] = {"a", "b"};
    s = gw_models_body(models, 2, 5, &n);
    v = load(s, n);
    assert_string_equal(json_string_value(json_object_get(v, "object")), "list");
    json_t *d = json_object_get(v, "data");
    assert_int_equal(json_array_size(d), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(d, 1), "id")), "b");
    assert_string_equal(json_string_value(json_object_get(json_array_get(d, 1), "object")), "model");
    json_decref(v);
    free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chat_all_parameters),
        cmocka_unit_test(test_chat_defaults_are_unset),
        cmocka_unit_test(test_completion_prompt_forms),
        cmocka_unit_test(test_wrong_types_name_the_parameter),
        cmocka_unit_test(test_ranges_and_missing),
        cmocka_unit_test(test_n_greater_than_one_is_clear),
        cmocka_unit_test(test_malformed_json),
        cmocka_unit_test(test_chat_chunks),
        cmocka_unit_test(test_chunk_logprobs_and_usage),
        cmocka_unit_test(test_full_responses),
        cmocka_unit_test(test_error_and_models_bodies),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
