/* cmd_perplexity.c - `citadel perplexity --model F --file T --ctx N`: the text is
 * tokenized with BOS, its first N tokens are run through the model, and each token
 * after the first is scored from all the tokens before it (no sliding window):
 *   nll = -mean(log p(token_i | tokens_<i)),  ppl = exp(nll)
 * Prints "ppl=<value> nll=<value> tokens=<scored>". */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* -log softmax(logits)[target], computed with the max subtracted for stability. */
static double token_nll(const float *logits, int V, int target)
{
    float max = logits[0];
    for (int i = 1; i < V; i++)
        if (logits[i] > max) max = logits[i];
    double sum = 0.0;
    for (int i = 0; i < V; i++)
        sum += exp((double)logits[i] - max);
    return -((double)logits[target] - max - log(sum));
}

/* Runs ids through a fresh session in chunks and returns the mean NLL, or NAN. */
static double mean_nll(engine_model *m, const int32_t *ids, int n, int threads)
{
    int V = engine_n_vocab(m), chunk = 128;
    engine_session *s = engine_session_create(m, &(engine_session_options){.n_ctx = n, .n_threads = threads, .n_batch = chunk});
    float *logits = malloc(sizeof(float) * (size_t)chunk * V);
    double total = 0.0;
    char err[256];
    bool ok = s && logits;
    for (int done = 0; ok && done < n; done += chunk) {
        int T = n - done < chunk ? n - done : chunk;
        if (engine_session_eval(s, ids + done, T, logits, true, err, sizeof err)) {
            fprintf(stderr, "citadel perplexity: %s\n", err);
            ok = false;
            break;
        }
        for (int t = 0; t < T && done + t + 1 < n; t++)
            total += token_nll(logits + (size_t)t * V, V, ids[done + t + 1]);
    }
    free(logits);
    engine_session_free(s);
    return ok ? total / (n - 1) : NAN;
}

int cmd_perplexity(int argc, char **argv)
{
    static const struct option options[] = {
        {"model", required_argument, 0, 'm'}, {"file", required_argument, 0, 'f'},
        {"ctx", required_argument, 0, 'c'}, {"threads", required_argument, 0, 't'},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    const char *model = NULL, *file = NULL;
    long ctx = 0, threads = 0;
    int opt;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (opt) {
        case 'm': model = optarg; break;
        case 'f': file = optarg; break;
        case 'c':
            if (!cli_parse_int(optarg, 2, 1 << 20, &ctx)) return cli_usage_error("perplexity", "bad --ctx '%s'", optarg);
            break;
        case 't':
            if (!cli_parse_int(optarg, 1, 512, &threads)) return cli_usage_error("perplexity", "bad --threads '%s'", optarg);
            break;
        case 'h':
            printf("usage: citadel perplexity --model FILE --file TEXT --ctx N [--threads N]\n");
            return 0;
        default: return cli_usage_error("perplexity", "unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (file == NULL || ctx == 0) return cli_usage_error("perplexity", "--file and --ctx are required");
    size_t len;
    char *text = cli_read_file(file, &len);
    if (text == NULL) {
        fprintf(stderr, "citadel perplexity: cannot read %s\n", file);
        return 1;
    }
    engine_model *m = cli_open_model("perplexity", model);
    if (m == NULL) { free(text); return 1; }
    int cap = (int)len + 8;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)cap);
    int n = ids ? engine_tokenize(m, text, len, true, false, ids, cap) : -1;
    int rc = 1;
    if (n < 0 || n > cap)
        fprintf(stderr, "citadel perplexity: tokenization failed\n");
    else if (n < ctx)
        fprintf(stderr, "citadel perplexity: the text has %d tokens, fewer than --ctx %ld\n", n, ctx);
    else {
        double nll = mean_nll(m, ids, (int)ctx, (int)threads);
        if (!isnan(nll)) {
            printf("ppl=%.6f nll=%.6f tokens=%ld\n", exp(nll), nll, ctx - 1);
            rc = 0;
        }
    }
    free(ids);
    free(text);
    engine_model_close(m);
    return rc;
}
