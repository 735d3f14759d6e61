/* cmd_bench.c - `citadel bench`: prompt-processing and generation speed, measured the
 * way llama-bench measures them so the figures compare side by side:
 *   prompt: a fresh sequence, P random tokens in one batched forward pass -> P / seconds
 *   gen:    a fresh sequence, G forward passes of one token each        -> G / seconds
 * each repeated --reps times after one warm-up; the median is printed.
 *
 * --model F runs a real file; --shape S --type T writes (once) a random-weight model
 * of a real shape into var/bench/ and runs that. --tp N runs the model split over N
 * processes (tensor parallelism, a shared-memory group): each rank runs the same
 * measurements on its share, and rank 0 reports. Output lines are key=value:
 *   prompt_tokens_per_s=<x>  gen_tokens_per_s=<y>  (and model, threads, peak_rss_mib)
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "parallel/collective.h"

typedef struct bench_args {
    const char *model, *shape, *type;
    long threads, prompt_tokens, gen_tokens, reps, parallel, tp;
} bench_args;

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int compare_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, compare_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static enum tensor_type parse_type(const char *name)
{
    static const struct { const char *name; enum tensor_type type; } types[] = {
        {"f32", TENSOR_F32}, {"f16", TENSOR_F16}, {"bf16", TENSOR_BF16}, {"q8_0", TENSOR_Q8_0},
        {"q4_0", TENSOR_Q4_0}, {"q4_1", TENSOR_Q4_1}, {"q4_k", TENSOR_Q4_K}, {"q6_k", TENSOR_Q6_K}};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        if (!strcasecmp(name, types[i].name))
            return types[i].type;
    return TENSOR_TYPE_MAX;
}

/* The path of the random model for shape/type, written if it is not there yet. */
static char *random_model_path(const bench_args *a)
{
    const engine_model_shape *shape = engine_shape_by_name(a->shape);
    enum tensor_type type = parse_type(a->type ? a->type : "q8_0");
    if (shape == NULL) {
        cli_usage_error("bench", "unknown --shape '%s' (smollm2-135m, tinyllama-1.1b)", a->shape);
        return NULL;
    }
    if (type == TENSOR_TYPE_MAX) {
        cli_usage_error("bench", "unknown --type '%s' (f32 f16 bf16 q8_0 q4_0 q4_1 q4_k q6_k)", a->type);
        return NULL;
    }
    char *path = malloc(512);
    snprintf(path, 512, "var/bench/%s-%s.gguf", shape->name, tensor_type_info(type)->name);
    struct stat st;
    if (stat(path, &st) == 0)
        return path;
    mkdir("var", 0755);
    mkdir("var/bench", 0755);
    fprintf(stderr, "bench: writing random-weight model %s\n", path);
    char err[512];
    if (engine_write_random_model(path, shape, type, 1234, err, sizeof err)) {
        fprintf(stderr, "citadel bench: %s\n", err);
        free(path);
        return NULL;
    }
    return path;
}

/* Seconds for one run of n tokens: batched (prompt) or one token at a time (gen). */
static double time_run(engine_session *s, const int32_t *ids, int n, bool batched, float *logits)
{
    char err[256];
    engine_session_reset(s);
    double t0 = now_seconds();
    if (batched)
        engine_session_eval(s, ids, n, logits, false, err, sizeof err);
    else
        for (int i = 0; i < n; i++)
            engine_session_eval(s, ids + i, 1, logits, false, err, sizeof err);
    return now_seconds() - t0;
}

/* ---- --parallel: N generations at once through the engine's batch runner ---- */

typedef struct stream_clock {
    double start, first_token;
    int tokens;
} stream_clock;

static bool count_token(const engine_token_event *ev, void *user)
{
    stream_clock *c = user;
    if (ev->id >= 0 && c->tokens++ == 0)
        c->first_token = now_seconds();
    return true;
}

/* N streams of a P-token prompt and G generated tokens (EOS ignored) all started at
 * once: aggregate generated tokens per second and time to first token. */
static void run_parallel(engine_model *m, const bench_args *a, const int32_t *ids)
{
    int N = (int)a->parallel, P = a->prompt_tokens > 0 ? (int)a->prompt_tokens : 1, G = (int)a->gen_tokens;
    char err[256];
    engine_batch *b = engine_batch_create(m, &(engine_batch_options){
        .n_ctx = P + G + 16, .max_seqs = N, .n_threads = (int)a->threads}, err, sizeof err);
    stream_clock *clocks = calloc((size_t)N, sizeof *clocks);
    double *ttft = calloc((size_t)N, sizeof *ttft);
    if (!b || !clocks || !ttft) {
        fprintf(stderr, "citadel bench: --parallel %d: %s\n", N, b ? "out of memory" : err);
        goto out;
    }
    engine_gen_params p = engine_default_gen_params();
    p.sampling.temperature = 0;
    p.max_tokens = G;
    p.ignore_eos = true;
    double t0 = now_seconds();
    for (int i = 0; i < N; i++) {
        clocks[i].start = t0;
        if (engine_batch_add(b, (uint64_t)i, ids + i % 7, P, &p, count_token, NULL, &clocks[i], err, sizeof err)) {
            fprintf(stderr, "citadel bench: %s\n", err);
            goto out;
        }
    }
    while (engine_batch_step(b) > 0) {}
    double wall = now_seconds() - t0;
    long total = 0;
    for (int i = 0; i < N; i++) {
        total += clocks[i].tokens;
        ttft[i] = clocks[i].first_token - clocks[i].start;
    }
    qsort(ttft, (size_t)N, sizeof *ttft, compare_double);
    printf("parallel=%d aggregate_gen_tokens_per_s=%.2f ttft_p50_s=%.3f ttft_p99_s=%.3f\n", N, total / wall,
           ttft[N / 2], ttft[(N * 99) / 100 < N ? (N * 99) / 100 : N - 1]);
out:
    engine_batch_free(b);
    free(clocks);
    free(ttft);
}

static int run_bench(const bench_args *a, const char *path, collective *comm)
{
    engine_model *m = NULL;
    char err[512];
    if (comm == NULL)
        m = cli_open_model("bench", path);
    else if (engine_model_open_shard(&m, path, comm, err, sizeof err))
        fprintf(stderr, "citadel bench: %s\n", err);
    if (m == NULL)
        return 1;
    engine_model_info info = engine_model_get_info(m);
    int P = (int)a->prompt_tokens, G = (int)a->gen_tokens, n = P > G ? P : G;
    engine_session *s = engine_session_create(m, &(engine_session_options){
        .n_ctx = n + 16, .n_threads = (int)a->threads, .n_batch = P > 0 ? P : 1});
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)(n + 8));
    float *logits = malloc(sizeof(float) * (size_t)info.n_vocab);
    double *pp = calloc((size_t)a->reps, sizeof(double)), *tg = calloc((size_t)a->reps, sizeof(double));
    if (!s || !ids || !logits || !pp || !tg) {
        fprintf(stderr, "citadel bench: out of memory\n");
        return 1;
    }
    srand(42);
    for (int i = 0; i < n + 8; i++)
        ids[i] = 3 + rand() % (info.n_vocab - 3);
    if (P > 0) time_run(s, ids, P, true, logits);   /* warm-up: page in weights */
    for (int r = 0; r < a->reps; r++) {
        if (P > 0) pp[r] = P / time_run(s, ids, P, true, logits);
        if (G > 0) tg[r] = G / time_run(s, ids, G, false, logits);
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("model=%s arch=%s weights=%s file_mib=%.1f\n", path, info.arch, info.weight_type,
           info.file_bytes / 1048576.0);
    printf("threads=%ld tp=%ld reps=%ld prompt_tokens=%d gen_tokens=%d\n", a->threads, a->tp, a->reps, P, G);
    if (P > 0) printf("prompt_tokens_per_s=%.2f\n", median(pp, (int)a->reps));
    if (G > 0) printf("gen_tokens_per_s=%.2f\n", median(tg, (int)a->reps));
    printf("peak_rss_mib=%.1f\n", ru.ru_maxrss / 1024.0);
    if (a->parallel > 0)
        run_parallel(m, a, ids);
    free(ids); free(logits); free(pp); free(tg);
    engine_session_free(s);
    engine_model_close(m);
    return 0;
}

/* --tp N: ranks 1..N-1 are forked before any thread exists and run the same
 * measurements silently; rank 0 reports. */
static int run_split(const bench_args *a, const char *path)
{
    char name[64], err[512];
    snprintf(name, sizeof name, "citadel-bench-%d", (int)getpid());
    int size = (int)a->tp, rank = 0;
    pid_t kids[COLLECTIVE_MAX_RANKS];
    if (size > COLLECTIVE_MAX_RANKS)
        return cli_usage_error("bench", "--tp %d: at most %d", size, COLLECTIVE_MAX_RANKS);
    fflush(stdout);
    for (int r = 1; r < size; r++) {
        kids[r] = fork();
        if (kids[r] == 0) {
            rank = r;
            if (freopen("/dev/null", "w", stdout) == NULL) _exit(1);
            break;
        }
    }
    collective *c = collective_shm_open(name, rank, size, 0, 60000, 120000, err, sizeof err);
    int rc = 1;
    if (c == NULL) fprintf(stderr, "citadel bench: %s\n", err);
    else rc = run_bench(a, path, c);
    collective_close(c);
    if (rank > 0) _exit(rc);
    for (int r = 1; r < size; r++) {
        int status;
        if (kids[r] > 0 && (waitpid(kids[r], &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status)))
            rc = 1;
    }
    return rc;
}

int cmd_bench(int argc, char **argv)
{
    static const struct option options[] = {
        {"model", required_argument, 0, 'm'}, {"shape", required_argument, 0, 's'},
        {"type", required_argument, 0, 'y'}, {"threads", required_argument, 0, 't'},
        {"prompt-tokens", required_argument, 0, 'p'}, {"gen-tokens", required_argument, 0, 'g'},
        {"reps", required_argument, 0, 'r'}, {"parallel", required_argument, 0, 'n'}, {"tp", required_argument, 0, 'x'},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    bench_args a = {.threads = 2, .prompt_tokens = 128, .gen_tokens = 64, .reps = 3, .tp = 1};
    int opt;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        long *target = opt == 't' ? &a.threads : opt == 'p' ? &a.prompt_tokens
                     : opt == 'g' ? &a.gen_tokens : opt == 'r' ? &a.reps
                     : opt == 'n' ? &a.parallel : opt == 'x' ? &a.tp : NULL;
        if (target) {
            long lo = opt == 't' || opt == 'r' || opt == 'x' ? 1 : 0;
            if (!cli_parse_int(optarg, lo, 1 << 16, target))
                return cli_usage_error("bench", "bad value '%s' for %s", optarg, argv[optind - 1]);
            continue;
        }
        switch (opt) {
        case 'm': a.model = optarg; break;
        case 's': a.shape = optarg; break;
        case 'y': a.type = optarg; break;
        case 'h':
            printf("usage: citadel bench (--model FILE | --shape smollm2-135m|tinyllama-1.1b [--type q8_0|q4_0|...])\n"
                   "                     [--threads N] [--prompt-tokens P] [--gen-tokens G] [--reps R]\n"
                   "                     [--parallel N]   (then N streams at once: aggregate tok/s, TTFT)\n"
                   "                     [--tp N]         (the model split over N processes, --threads each)\n");
            return 0;
        default: return cli_usage_error("bench", "unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if ((a.model == NULL) == (a.shape == NULL))
        return cli_usage_error("bench", "give either --model or --shape");
    if (a.prompt_tokens + a.gen_tokens == 0)
        return cli_usage_error("bench", "nothing to measure");
    char *path = a.shape ? random_model_path(&a) : NULL;
    if (a.shape && path == NULL) return 1;
    int rc = a.tp > 1 ? run_split(&a, path ? path : a.model) : run_bench(&a, path ? path : a.model, NULL);
    free(path);
    return rc;
}
