/* cmd_train.c - `citadel train`: a LoRA fine-tuning job run locally, the same job
 * citadel-trainer runs in the fleet: data from JSONL (common/train_data.h: bad lines
 * reported and skipped, PII redacted, duplicates removed, a validation split), training
 * on the engine (engine_train.h), evaluation, checkpoints, the adapter as a GGUF LoRA
 * file. Progress goes to stdout one `key=value` line at a time; the lines
 * `initial_val_loss=<x>` and `final_val_loss=<y>` are a contract (tests read them).
 */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "engine_train.h"
#include "train_data.h"

typedef struct train_args {
    const char *model, *data, *out;
    engine_train_options opt;
    train_data_options data_opt;
    bool sanitize, quiet;
} train_args;

static void train_help(void)
{
    printf("usage: citadel train --model FILE --data FILE.jsonl --out ADAPTER.gguf [options]\n"
           "  data: one JSON object a line, {\"messages\": [{\"role\", \"content\"}...]} or\n"
           "        {\"prompt\", \"completion\"}; only the assistant's / completion's tokens are learned\n"
           "  --steps N              optimizer steps (100)\n"
           "  --rank R --alpha X     LoRA rank (8) and alpha (2 * rank)\n"
           "  --dropout X            LoRA dropout (0)\n"
           "  --mlp                  adapt the MLP projections too (attention q/k/v/o always)\n"
           "  --lr X                 peak learning rate (1e-3); --warmup N steps (steps/20),\n"
           "                         then cosine decay to lr * 0.1\n"
           "  --batch N              examples per step (gradient accumulation, 4)\n"
           "  --seq-len N            longest sequence in tokens (256; longer ones are cut)\n"
           "  --weight-decay X --clip X   AdamW decay (0), gradient norm cap (1; 0 = none)\n"
           "  --seed S               initialization, data order, dropout, split (42)\n"
           "  --threads N            CPU threads (all)\n"
           "  --eval-every N         validation every N steps (steps/10); --patience N stops after\n"
           "                         N evaluations without improvement (0 = never)\n"
           "  --checkpoint FILE --checkpoint-every N   checkpoints (adapter, optimizer, data\n"
           "                         position); a job started again with the same FILE resumes\n"
           "  --val-share X          share of examples held out (0.1)\n"
           "  --max-bad-share X      fail when more lines than this share are bad (0.1)\n"
           "  --eval-generations N   held-out examples generated for BLEU/ROUGE-L (16)\n"
           "  --no-sanitize          keep PII in the texts (default: redact it first)\n"
           "  --quiet                no per-step lines\n");
}

enum { OPT_STEPS = 256, OPT_RANK, OPT_ALPHA, OPT_DROPOUT, OPT_MLP, OPT_LR, OPT_WARMUP, OPT_BATCH,
       OPT_SEQ, OPT_WD, OPT_CLIP, OPT_SEED, OPT_THREADS, OPT_EVAL, OPT_PATIENCE, OPT_CKPT,
       OPT_CKPT_EVERY, OPT_VAL, OPT_BAD, OPT_GENS, OPT_NO_SAN, OPT_QUIET };

static int parse_option(train_args *a, int opt, const char *v)
{
    long n;
    double x;
    engine_train_options *o = &a->opt;
#define INT_OPT(flag, lo, hi, field) \
    if (!cli_parse_int(v, lo, hi, &n)) return cli_usage_error("train", "bad " flag " '%s'", v); \
    field = (int)n; return 0
#define FLOAT_OPT(flag, lo, hi, field) \
    if (!cli_parse_float(v, lo, hi, &x)) return cli_usage_error("train", "bad " flag " '%s'", v); \
    field = x; return 0
    switch (opt) {
    case 'm': a->model = v; return 0;
    case 'd': a->data = v; return 0;
    case 'o': a->out = v; return 0;
    case OPT_MLP: o->mlp = true; return 0;
    case OPT_NO_SAN: a->sanitize = false; return 0;
    case OPT_QUIET: a->quiet = true; return 0;
    case OPT_CKPT: o->checkpoint_path = v; return 0;
    case OPT_STEPS: INT_OPT("--steps", 1, 10000000, o->steps);
    case OPT_RANK: INT_OPT("--rank", 1, 1024, o->rank);
    case OPT_WARMUP: INT_OPT("--warmup", 0, 10000000, o->warmup_steps);
    case OPT_BATCH: INT_OPT("--batch", 1, 4096, o->grad_accum);
    case OPT_SEQ: INT_OPT("--seq-len", 2, 1 << 16, o->seq_len);
    case OPT_THREADS: INT_OPT("--threads", 1, 512, o->n_threads);
    case OPT_EVAL: INT_OPT("--eval-every", 0, 10000000, o->eval_every);
    case OPT_PATIENCE: INT_OPT("--patience", 0, 1000000, o->patience);
    case OPT_CKPT_EVERY: INT_OPT("--checkpoint-every", 0, 10000000, o->checkpoint_every);
    case OPT_GENS: INT_OPT("--eval-generations", 0, 100000, o->eval_generations);
    case OPT_ALPHA: FLOAT_OPT("--alpha", 0, 1e6, o->alpha);
    case OPT_DROPOUT: FLOAT_OPT("--dropout", 0, 0.99, o->dropout);
    case OPT_LR: FLOAT_OPT("--lr", 1e-9, 1, o->lr);
    case OPT_WD: FLOAT_OPT("--weight-decay", 0, 10, o->weight_decay);
    case OPT_CLIP: FLOAT_OPT("--clip", 0, 1e6, o->grad_clip);
    case OPT_VAL: FLOAT_OPT("--val-share", 0, 0.9, a->data_opt.val_share);
    case OPT_BAD: FLOAT_OPT("--max-bad-share", 0, 1, a->data_opt.max_bad_share);
    case OPT_SEED:
        if (!cli_parse_int(v, 0, __LONG_MAX__, &n)) return cli_usage_error("train", "bad --seed '%s'", v);
        o->seed = a->data_opt.seed = (uint64_t)n;
        return 0;
    default:
        return cli_usage_error("train", "unknown option");
    }
#undef INT_OPT
#undef FLOAT_OPT
}

static int parse_args(train_args *a, int argc, char **argv)
{
    static const struct option options[] = {
        {"model", required_argument, 0, 'm'}, {"data", required_argument, 0, 'd'},
        {"out", required_argument, 0, 'o'}, {"steps", required_argument, 0, OPT_STEPS},
        {"rank", required_argument, 0, OPT_RANK}, {"alpha", required_argument, 0, OPT_ALPHA},
        {"dropout", required_argument, 0, OPT_DROPOUT}, {"mlp", no_argument, 0, OPT_MLP},
        {"lr", required_argument, 0, OPT_LR}, {"warmup", required_argument, 0, OPT_WARMUP},
        {"batch", required_argument, 0, OPT_BATCH}, {"seq-len", required_argument, 0, OPT_SEQ},
        {"weight-decay", required_argument, 0, OPT_WD}, {"clip", required_argument, 0, OPT_CLIP},
        {"seed", required_argument, 0, OPT_SEED}, {"threads", required_argument, 0, OPT_THREADS},
        {"eval-every", required_argument, 0, OPT_EVAL}, {"patience", required_argument, 0, OPT_PATIENCE},
        {"checkpoint", required_argument, 0, OPT_CKPT},
        {"checkpoint-every", required_argument, 0, OPT_CKPT_EVERY},
        {"val-share", required_argument, 0, OPT_VAL}, {"max-bad-share", required_argument, 0, OPT_BAD},
        {"eval-generations", required_argument, 0, OPT_GENS},
        {"no-sanitize", no_argument, 0, OPT_NO_SAN}, {"quiet", no_argument, 0, OPT_QUIET},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    a->opt = engine_train_default_options();
    a->data_opt = (train_data_options){.max_bad_share = 0.1, .val_share = 0.1, .seed = a->opt.seed};
    a->sanitize = true;
    bool alpha_given = false;
    int opt;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        if (opt == 'h') { train_help(); return 1; }
        if (opt == '?') return cli_usage_error("train", "unknown or incomplete option '%s'", argv[optind - 1]);
        alpha_given |= opt == OPT_ALPHA;
        int rc = parse_option(a, opt, optarg);
        if (rc) return rc;
    }
    if (optind < argc) return cli_usage_error("train", "unexpected argument '%s'", argv[optind]);
    if (!a->data) return cli_usage_error("train", "--data is required");
    if (!a->out) return cli_usage_error("train", "--out is required");
    if (!alpha_given) a->opt.alpha = 2.0f * (float)a->opt.rank;
    if (a->opt.checkpoint_path && a->opt.checkpoint_every == 0)
        a->opt.checkpoint_every = a->opt.eval_every > 0 ? a->opt.eval_every : 10;
    return 0;
}

static void report_bad_line(int line, const char *why, void *user)
{
    (void)user;
    fprintf(stderr, "citadel train: %s: line %d skipped: %s\n", "data", line, why);
}

/* Tokenizes records into examples; records that cannot be learned are reported and
 * left out. Returns the count, or -1 when out of memory. */
static int encode_all(engine_model *m, const train_record *recs, int n, int seq_len,
                      engine_train_example *out)
{
    int k = 0;
    for (int i = 0; i < n; i++) {
        const train_record *r = &recs[i];
        char err[256];
        int rc;
        if (r->n_msgs > 0) {
            chat_message msgs[r->n_msgs];
            for (int j = 0; j < r->n_msgs; j++)
                msgs[j] = (chat_message){r->roles[j], r->contents[j]};
            rc = engine_train_encode_chat(m, msgs, (size_t)r->n_msgs, seq_len + 1, &out[k], err, sizeof err);
        } else {
            rc = engine_train_encode_completion(m, r->prompt, r->completion, seq_len + 1, &out[k], err,
                                                sizeof err);
        }
        if (rc == 0)
            k++;
        else
            fprintf(stderr, "citadel train: data: line %d skipped: %s\n", r->line, err);
    }
    return k;
}

typedef struct progress {
    bool quiet;
    double tokens, seconds, cpu_seconds;
} progress;

static bool on_event(const engine_train_event *ev, void *user)
{
    progress *p = user;
    const engine_train_step *s = &ev->step;
    switch (ev->kind) {
    case ENGINE_TRAIN_STEP:
        p->tokens += s->tokens;
        p->seconds += s->seconds;
        p->cpu_seconds += s->cpu_seconds;
        if (!p->quiet)
            printf("step=%d loss=%.4f lr=%.3g grad_norm=%.3f tokens_per_s=%.1f\n", s->step, s->loss,
                   s->lr, s->grad_norm, s->seconds > 0 ? s->tokens / s->seconds : 0.0);
        break;
    case ENGINE_TRAIN_EVAL:
        printf("eval step=%d val_loss=%.4f perplexity=%.3f\n", s->step, ev->val_loss, ev->perplexity);
        break;
    case ENGINE_TRAIN_CHECKPOINT:
        printf("checkpoint step=%d\n", s->step);
        break;
    case ENGINE_TRAIN_EARLY_STOP:
        printf("early_stop step=%d\n", s->step);
        break;
    }
    fflush(stdout);
    return true;
}

static int run_job(engine_model *m, train_args *a, engine_train_example *train, int n_train,
                   engine_train_example *val, int n_val)
{
    char err[512];
    engine_trainer *t = engine_trainer_create(m, &a->opt, train, n_train, val, n_val, err, sizeof err);
    if (t == NULL) {
        fprintf(stderr, "citadel train: %s\n", err);
        return 1;
    }
    int rc = 1;
    printf("initial_val_loss=%.6f\n", engine_trainer_val_loss(t, NULL));
    int resumed = a->opt.checkpoint_path ? engine_trainer_resume(t, a->opt.checkpoint_path, err, sizeof err) : 0;
    if (resumed < 0)
        goto done;
    if (resumed)
        printf("resumed step=%d\n", engine_trainer_steps_done(t));
    progress p = {a->quiet, 0, 0, 0};
    if (engine_trainer_run(t, on_event, &p, err, sizeof err))
        goto done;
    double final = engine_trainer_val_loss(t, NULL);
    printf("final_val_loss=%.6f\nval_perplexity=%.4f\n", final, exp(final));
    if (p.seconds > 0 && p.cpu_seconds > 0)  /* per CPU second: a figure that load elsewhere does not hide */
        printf("train_tokens_per_s=%.1f train_tokens_per_cpu_s=%.1f\n", p.tokens / p.seconds,
               p.tokens / p.cpu_seconds);
    engine_train_scores sc;
    if (engine_trainer_generation_scores(t, &sc, err, sizeof err))
        goto done;
    if (sc.n > 0)
        printf("bleu=%.4f rouge_l=%.4f generations=%d\n", sc.bleu, sc.rouge_l, sc.n);
    if (engine_trainer_save_adapter(t, a->out, err, sizeof err))
        goto done;
    printf("adapter=%s\n", a->out);
    rc = 0;
done:
    if (rc)
        fprintf(stderr, "citadel train: %s\n", err);
    engine_trainer_free(t);
    return rc;
}

int cmd_train(int argc, char **argv)
{
    train_args a = {0};
    int rc = parse_args(&a, argc, argv);
    if (rc) return rc == 1 ? 0 : rc;
    char err[512];
    if (a.sanitize && (a.data_opt.sanitizer = sanitizer_new(NULL, NULL, err, sizeof err)) == NULL) {
        fprintf(stderr, "citadel train: %s\n", err);
        return 1;
    }
    train_dataset ds;
    rc = train_data_load(&ds, a.data, &a.data_opt, report_bad_line, NULL, err, sizeof err);
    sanitizer_free(a.data_opt.sanitizer);
    if (rc) {
        fprintf(stderr, "citadel train: %s: %s\n", a.data, err);
        return 1;
    }
    printf("data lines=%d bad=%d duplicates=%d redacted=%u train=%d val=%d\n", ds.n_lines, ds.n_bad,
           ds.n_duplicates, ds.n_redacted, ds.n_train, ds.n_val);
    engine_model *m = cli_open_model("train", a.model);
    engine_train_example *train = calloc((size_t)ds.n_train, sizeof *train);
    engine_train_example *val = calloc((size_t)(ds.n_val + 1), sizeof *val);
    rc = 1;
    if (m && train && val) {
        int n_train = encode_all(m, ds.train, ds.n_train, a.opt.seq_len, train);
        int n_val = encode_all(m, ds.val, ds.n_val, a.opt.seq_len, val);
        if (n_train == 0)
            fprintf(stderr, "citadel train: no training example fits the model\n");
        else
            rc = run_job(m, &a, train, n_train, val, n_val);
        for (int i = 0; i < n_train; i++) engine_train_example_free(&train[i]);
        for (int i = 0; i < n_val; i++) engine_train_example_free(&val[i]);
    }
    free(train);
    free(val);
    engine_model_close(m);
    train_dataset_free(&ds);
    return rc;
}
