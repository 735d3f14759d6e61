/* test_cli.c - the `citadel` command's contract, run as a user runs it: exit codes and
 * stderr messages for bad input, and the JSON and key=value outputs later tests and
 * tools rely on. The binary is $CITADEL_BIN (set by `make test`), else build/bin/citadel.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "json_min.h"

#define STORIES "tests/data/models/stories260K.gguf"

static const char *citadel_bin(void)
{
    const char *bin = getenv("CITADEL_BIN");
    return bin && *bin ? bin : "build/bin/citadel";
}

/* Runs `citadel <args>` through the shell; returns the exit status and what it printed
 * on stdout (and on stderr when merge_stderr). The caller frees *output. */
static int run_citadel(const char *args, bool merge_stderr, char **output)
{
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "%s %s %s", citadel_bin(), args, merge_stderr ? "2>&1" : "2>/dev/null");
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    for (size_t got; (got = fread(buf + n, 1, cap - n - 1, p)) > 0;) {
        n += got;
        if (n + 1 == cap) buf = realloc(buf, cap *= 2);
    }
    buf[n] = '\0';
    int status = pclose(p);
    *output = buf;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void expect_failure(const char *args, const char *message_part)
{
    char *out;
    int rc = run_citadel(args, true, &out);
    if (rc == 0 || strstr(out, message_part) == NULL)
        fail_msg("citadel %s: exit %d, output '%s' (wanted non-zero and '%s')", args, rc, out, message_part);
    free(out);
}

static void test_bad_arguments_fail_clearly(void **state)
{
    (void)state;
    expect_failure("", "usage");
    expect_failure("frobnicate", "unknown command");
    expect_failure("generate --prompt hi", "--model is required");
    expect_failure("generate --model " STORIES, "--prompt is required");
    expect_failure("generate --model " STORIES " --prompt hi --max-tokens -3", "bad --max-tokens");
    expect_failure("generate --model " STORIES " --prompt hi --temperature abc", "bad --temperature");
    expect_failure("generate --model " STORIES " --prompt hi --bogus", "unknown");
    expect_failure("generate --model tests/data/missing.gguf --prompt hi", "missing.gguf");
    expect_failure("generate --model tests/data/ppl-text.txt --prompt hi", "cannot load model");
    expect_failure("tokenize --model " STORIES, "--text is required");
    expect_failure("perplexity --model " STORIES " --file tests/data/ppl-text.txt --ctx 100000", "fewer than");
    expect_failure("bench --shape no-such-shape", "unknown --shape");
}

static void test_tokenize_json(void **state)
{
    (void)state;
    char *out;
    assert_int_equal(run_citadel("tokenize --model " STORIES " --text 'Hello world' --json", false, &out), 0);
    json_value *v = json_parse(out);
    assert_non_null(v);
    const json_value *ids = json_get(v, "ids");
    int want[] = {346, 306, 414, 263, 304, 341};  /* tests/data/stories260K-tokenize.jsonl */
    assert_int_equal(ids->n, 6);
    for (int i = 0; i < 6; i++)
        assert_int_equal((int)ids->items[i]->number, want[i]);
    json_free(v);
    free(out);
}

/* Greedy generation through the CLI gives llama.cpp's greedy ids and text. */
static void test_generate_json_matches_reference(void **state)
{
    (void)state;
    FILE *f = fopen("tests/data/stories260K-generate-shared.jsonl", "r");
    static char line[1 << 16];
    assert_non_null(fgets(line, sizeof line, f));
    fclose(f);
    json_value *ref = json_parse(line);
    const json_value *steps = json_get(ref, "steps"), *pids = json_get(ref, "prompt_ids");
    char args[512], *out;
    snprintf(args, sizeof args, "generate --model " STORIES " --prompt '%s' --temperature 0 --max-tokens %zu --json",
             json_get(ref, "prompt")->string, steps->n);
    assert_int_equal(run_citadel(args, false, &out), 0);
    json_value *v = json_parse(out);
    assert_non_null(v);
    const json_value *prompt_ids = json_get(v, "prompt_ids"), *ids = json_get(v, "ids");
    assert_int_equal(prompt_ids->n, pids->n);
    for (size_t i = 0; i < pids->n; i++)
        assert_int_equal((int)prompt_ids->items[i]->number, (int)pids->items[i]->number);
    assert_int_equal(ids->n, steps->n);
    for (size_t i = 0; i < steps->n; i++)
        assert_int_equal((int)ids->items[i]->number,
                         (int)json_get(steps->items[i], "top")->items[0]->items[0]->number);
    assert_string_equal(json_get(v, "text")->string, json_get(ref, "greedy_text")->string);
    assert_string_equal(json_get(v, "finish_reason")->string, "length");
    json_free(v);
    json_free(ref);
    free(out);
}

static void test_generate_seed_reproducible(void **state)
{
    (void)state;
    char *a, *b, *c;
    const char *args = "generate --model " STORIES " --prompt 'Once upon a time' --temperature 1 --seed 7 --max-tokens 24 --json";
    assert_int_equal(run_citadel(args, false, &a), 0);
    assert_int_equal(run_citadel(args, false, &b), 0);
    assert_int_equal(run_citadel("generate --model " STORIES " --prompt 'Once upon a time' --temperature 1 --seed 8 --max-tokens 24 --json", false, &c), 0);
    /* everything but the timings */
    for (char **o = (char *[]){a, b, c, NULL}; *o; o++) {
        char *t = strstr(*o, ",\"timings\"");
        assert_non_null(t);
        *t = '\0';
    }
    assert_string_equal(a, b);
    assert_string_not_equal(a, c);
    free(a); free(b); free(c);
}

static void test_perplexity_matches_reference(void **state)
{
    (void)state;
    char *out;
    assert_int_equal(run_citadel("perplexity --model " STORIES " --file tests/data/ppl-text.txt --ctx 128", false, &out), 0);
    const char *p = strstr(out, "ppl=");
    assert_non_null(p);
    double ppl = atof(p + 4);
    assert_true(fabs(ppl / 3.786303 - 1) < 1e-3);
    free(out);
}

static void test_bench_prints_rates(void **state)
{
    (void)state;
    char *out;
    assert_int_equal(run_citadel("bench --model " STORIES " --prompt-tokens 32 --gen-tokens 8 --reps 1", false, &out), 0);
    assert_non_null(strstr(out, "prompt_tokens_per_s="));
    assert_non_null(strstr(out, "gen_tokens_per_s="));
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_arguments_fail_clearly),
        cmocka_unit_test(test_tokenize_json),
        cmocka_unit_test(test_generate_json_matches_reference),
        cmocka_unit_test(test_generate_seed_reproducible),
        cmocka_unit_test(test_perplexity_matches_reference),
        cmocka_unit_test(test_bench_prints_rates),
    };
    return cmocka_run_group_tests_name("cli", tests, NULL, NULL);
}
