/* cmd_generate.c - `citadel generate`: one prompt (or one chat turn) in, text out,
 * streamed to stdout as it is generated, or as one JSON object with --json:
 *   {"prompt_ids": [...], "ids": [...], "text": "...", "finish_reason": "stop|length",
 *    "usage": {...}, "timings": {...}, "logprobs": [...] (with --logprobs N)}
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "json_writer.h"

typedef struct generate_args {
    const char *model, *prompt, *system, *adapter;
    bool chat, json;
    int threads, ctx, n_logprobs;
    engine_gen_params gen;
    int n_stop;
} generate_args;

static void generate_help(void)
{
    printf("usage: citadel generate --model FILE --prompt TEXT [options]\n"
           "  --adapter FILE         apply a LoRA adapter (GGUF, as made by citadel train)\n"
           "  --chat                 render the prompt as a user message with the model's chat template\n"
           "  --system TEXT          system message (with --chat)\n"
           "  --max-tokens N         tokens to generate at most (default 128)\n"
           "  --temperature X        0 = greedy (default 0.8)\n"
           "  --top-k N --top-p X --min-p X\n"
           "  --repeat-penalty X --presence-penalty X --frequency-penalty X\n"
           "  --seed S               sampling seed (default: from the clock)\n"
           "  --stop TEXT            stop string (repeatable, up to %d)\n"
           "  --logprobs N           report the top N alternatives of each token (0..%d)\n"
           "  --ignore-eos           keep generating past end-of-generation tokens\n"
           "  --threads N --ctx N    CPU threads, context positions\n"
           "  --json                 print one JSON object instead of streaming text\n",
           ENGINE_MAX_STOP - 1, SAMPLE_MAX_TOP);
}

enum { OPT_MAX_TOKENS = 256, OPT_TEMP, OPT_TOPK, OPT_TOPP, OPT_MINP, OPT_REPEAT, OPT_PRESENCE,
       OPT_FREQUENCY, OPT_SEED, OPT_STOP, OPT_LOGPROBS, OPT_IGNORE_EOS, OPT_THREADS, OPT_CTX,
       OPT_SYSTEM, OPT_ADAPTER };

static int parse_option(generate_args *a, int opt, const char *v)
{
    long n;
    double x;
    sampler_params *sp = &a->gen.sampling;
    switch (opt) {
    case 'm': a->model = v; return 0;
    case 'p': a->prompt = v; return 0;
    case 'c': a->chat = true; return 0;
    case 'j': a->json = true; return 0;
    case OPT_SYSTEM: a->system = v; return 0;
    case OPT_ADAPTER: a->adapter = v; return 0;
    case OPT_IGNORE_EOS: a->gen.ignore_eos = true; return 0;
    case OPT_MAX_TOKENS:
        if (!cli_parse_int(v, 1, 1 << 20, &n)) return cli_usage_error("generate", "bad --max-tokens '%s'", v);
        a->gen.max_tokens = (int)n; return 0;
    case OPT_TEMP:
        if (!cli_parse_float(v, 0, 100, &x)) return cli_usage_error("generate", "bad --temperature '%s'", v);
        sp->temperature = (float)x; return 0;
    case OPT_TOPK:
        if (!cli_parse_int(v, 0, 1 << 24, &n)) return cli_usage_error("generate", "bad --top-k '%s'", v);
        sp->top_k = (int)n; return 0;
    case OPT_TOPP:
        if (!cli_parse_float(v, 0, 1, &x)) return cli_usage_error("generate", "bad --top-p '%s'", v);
        sp->top_p = (float)x; return 0;
    case OPT_MINP:
        if (!cli_parse_float(v, 0, 1, &x)) return cli_usage_error("generate", "bad --min-p '%s'", v);
        sp->min_p = (float)x; return 0;
    case OPT_REPEAT:
        if (!cli_parse_float(v, 0, 10, &x)) return cli_usage_error("generate", "bad --repeat-penalty '%s'", v);
        sp->repeat_penalty = (float)x; return 0;
    case OPT_PRESENCE:
        if (!cli_parse_float(v, -2, 2, &x)) return cli_usage_error("generate", "bad --presence-penalty '%s'", v);
        sp->presence_penalty = (float)x; return 0;
    case OPT_FREQUENCY:
        if (!cli_parse_float(v, -2, 2, &x)) return cli_usage_error("generate", "bad --frequency-penalty '%s'", v);
        sp->frequency_penalty = (float)x; return 0;
    case OPT_SEED:
        if (!cli_parse_int(v, 0, __LONG_MAX__, &n)) return cli_usage_error("generate", "bad --seed '%s'", v);
        sp->seed = (uint64_t)n; return 0;
    case OPT_LOGPROBS:
        if (!cli_parse_int(v, 0, SAMPLE_MAX_TOP, &n)) return cli_usage_error("generate", "bad --logprobs '%s'", v);
        a->n_logprobs = (int)n; sp->n_top_logprobs = (int)n; return 0;
    case OPT_THREADS:
        if (!cli_parse_int(v, 1, 512, &n)) return cli_usage_error("generate", "bad --threads '%s'", v);
        a->threads = (int)n; return 0;
    case OPT_CTX:
        if (!cli_parse_int(v, 16, 1 << 20, &n)) return cli_usage_error("generate", "bad --ctx '%s'", v);
        a->ctx = (int)n; return 0;
    case OPT_STOP:
        if (a->n_stop >= ENGINE_MAX_STOP - 1) return cli_usage_error("generate", "too many --stop strings");
        a->gen.stop[a->n_stop++] = v; return 0;
    default:
        return cli_usage_error("generate", "unknown option");
    }
}

static int parse_args(generate_args *a, int argc, char **argv)
{
    static const struct option options[] = {
        {"model", required_argument, 0, 'm'}, {"prompt", required_argument, 0, 'p'},
        {"chat", no_argument, 0, 'c'}, {"json", no_argument, 0, 'j'},
        {"system", required_argument, 0, OPT_SYSTEM}, {"adapter", required_argument, 0, OPT_ADAPTER},
        {"max-tokens", required_argument, 0, OPT_MAX_TOKENS},
        {"temperature", required_argument, 0, OPT_TEMP}, {"top-k", required_argument, 0, OPT_TOPK},
        {"top-p", required_argument, 0, OPT_TOPP}, {"min-p", required_argument, 0, OPT_MINP},
        {"repeat-penalty", required_argument, 0, OPT_REPEAT},
        {"presence-penalty", required_argument, 0, OPT_PRESENCE},
        {"frequency-penalty", required_argument, 0, OPT_FREQUENCY},
        {"seed", required_argument, 0, OPT_SEED}, {"stop", required_argument, 0, OPT_STOP},
        {"logprobs", required_argument, 0, OPT_LOGPROBS},
        {"ignore-eos", no_argument, 0, OPT_IGNORE_EOS},
        {"threads", required_argument, 0, OPT_THREADS}, {"ctx", required_argument, 0, OPT_CTX},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    a->gen = engine_default_gen_params();
    a->gen.max_tokens = 128;
    a->gen.sampling.seed = (uint64_t)time(NULL);
    int opt;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        if (opt == 'h') { generate_help(); return 1; }
        if (opt == '?') return cli_usage_error("generate", "unknown or incomplete option '%s'", argv[optind - 1]);
        int rc = parse_option(a, opt, optarg);
        if (rc) return rc;
    }
    if (optind < argc) return cli_usage_error("generate", "unexpected argument '%s'", argv[optind]);
    if (a->prompt == NULL) return cli_usage_error("generate", "--prompt is required");
    return 0;
}

/* The prompt's ids: the chat template rendered, or the plain text. */
static int32_t *prompt_ids(const engine_model *m, const generate_args *a, int *n)
{
    char *text = NULL;
    if (a->chat) {
        chat_message msgs[2];
        size_t k = 0;
        if (a->system) msgs[k++] = (chat_message){"system", a->system};
        msgs[k++] = (chat_message){"user", a->prompt};
        text = engine_render_chat(m, msgs, k, true);
        if (text == NULL) return NULL;
    }
    const char *t = text ? text : a->prompt;
    size_t len = strlen(t);
    int cap = (int)len + 8;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)cap);
    *n = ids ? engine_tokenize(m, t, len, engine_adds_bos(m), a->chat, ids, cap) : -1;
    free(text);
    if (*n < 0 || *n > cap) { free(ids); return NULL; }
    return ids;
}

typedef struct stream_ctx {
    bool json;
    const engine_model *m;
    FILE *logprobs;   /* memstream collecting the logprobs JSON array */
    int n_logprobs;
    bool first;
} stream_ctx;

static void write_logprob(stream_ctx *c, const engine_token_event *ev)
{
    char piece[256];
    const sample_result *sr = ev->sample;
    int n = engine_token_text(c->m, ev->id, piece, sizeof piece);
    fprintf(c->logprobs, "%s{\"id\":%d,\"token\":", c->first ? "" : ",", ev->id);
    json_write_string(c->logprobs, piece, n > 0 ? (size_t)(n < (int)sizeof piece ? n : (int)sizeof piece) : 0);
    fprintf(c->logprobs, ",\"logprob\":%.6f,\"top\":[", sr->logprob);
    for (int i = 0; i < sr->n_top; i++)
        fprintf(c->logprobs, "%s[%d,%.6f]", i ? "," : "", sr->top_ids[i], sr->top_logprobs[i]);
    fputs("]}", c->logprobs);
    c->first = false;
}

static bool on_token(const engine_token_event *ev, void *user)
{
    stream_ctx *c = user;
    if (!c->json) {
        fwrite(ev->text, 1, (size_t)ev->text_len, stdout);
        fflush(stdout);
    }
    if (c->logprobs && ev->sample)
        write_logprob(c, ev);
    return true;
}

static void print_json(const generate_args *a, const int32_t *ids, int n, const engine_gen_result *r,
                       char *logprobs)
{
    printf("{\"prompt_ids\":");
    json_write_int_array(stdout, ids, (size_t)n);
    printf(",\"ids\":");
    json_write_int_array(stdout, r->ids, (size_t)r->n_generated);
    printf(",\"text\":");
    json_write_string(stdout, r->text, r->text_len);
    printf(",\"finish_reason\":\"%s\"", engine_finish_name(r->finish));
    printf(",\"usage\":{\"prompt_tokens\":%d,\"completion_tokens\":%d,\"total_tokens\":%d}",
           r->n_prompt, r->n_generated, r->n_prompt + r->n_generated);
    printf(",\"timings\":{\"prompt_seconds\":%.6f,\"generate_seconds\":%.6f}", r->prefill_seconds,
           r->decode_seconds);
    if (a->n_logprobs > 0 || logprobs)
        printf(",\"logprobs\":[%s]", logprobs ? logprobs : "");
    printf("}\n");
}

int cmd_generate(int argc, char **argv)
{
    generate_args a = {0};
    int rc = parse_args(&a, argc, argv);
    if (rc) return rc == 1 ? 0 : rc;
    engine_model *m = cli_open_model("generate", a.model);
    if (m == NULL) return 1;
    int n = 0;
    int32_t *ids = prompt_ids(m, &a, &n);
    engine_session *s = engine_session_create(m, &(engine_session_options){.n_ctx = a.ctx, .n_threads = a.threads});
    rc = 1;
    if (ids == NULL || s == NULL) {
        fprintf(stderr, "citadel generate: cannot prepare the prompt (out of memory?)\n");
        goto done;
    }
    char *lp_buf = NULL;
    size_t lp_len = 0;
    stream_ctx ctx = {a.json, m, NULL, a.n_logprobs, true};
    if (a.n_logprobs > 0 || a.gen.sampling.n_top_logprobs > 0)
        ctx.logprobs = open_memstream(&lp_buf, &lp_len);
    engine_gen_result r;
    char err[512];
    engine_adapter *adapter = NULL;
    if (a.adapter && engine_adapter_open(&adapter, m, a.adapter, err, sizeof err)) {
        if (ctx.logprobs) fclose(ctx.logprobs);
        free(lp_buf);
        fprintf(stderr, "citadel generate: %s\n", err);
        goto done;
    }
    a.gen.adapter = adapter;
    int gen_rc = engine_generate(s, ids, n, &a.gen, on_token, &ctx, &r, err, sizeof err);
    engine_adapter_close(adapter);
    if (gen_rc) {
        if (ctx.logprobs) fclose(ctx.logprobs);
        free(lp_buf);
        fprintf(stderr, "citadel generate: %s\n", err);
        goto done;
    }
    if (ctx.logprobs) fclose(ctx.logprobs);
    if (a.json)
        print_json(&a, ids, n, &r, lp_buf);
    else
        printf("\n");
    free(lp_buf);
    engine_gen_result_free(&r);
    rc = 0;
done:
    free(ids);
    engine_session_free(s);
    engine_model_close(m);
    return rc;
}
