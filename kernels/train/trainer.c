/* trainer.c - fine-tuning jobs on the engine (engine_train.h): examples from chat
 * messages or prompt/completion pairs, the step (gradient accumulation, clipping,
 * AdamW with warm-up and cosine decay), validation, checkpoints and the job loop.
 *
 * Determinism, which resuming relies on: the k-th example a job consumes is element
 * k % n of the shuffle of epoch k / n (a permutation seeded by (seed, epoch)); the
 * dropout masks of that example are seeded by (seed, k). So (adapter, moments, step,
 * k) is the whole state of a job, and that is what a checkpoint holds.
 */
#include "engine_train.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine_model.h"
#include "model/lora.h"
#include "tokenizer/tokenizer.h"
#include "train/train.h"

/* ---- examples --------------------------------------------------------------------- */

typedef struct example_builder {
    int32_t *ids;
    uint8_t *mask;
    int n, cap, max_len;
} example_builder;

/* Appends the tokens of text (BOS first when bos), each marked scored or not. */
static int append_text(example_builder *b, const engine_model *m, const char *text, bool bos, bool scored)
{
    size_t len = strlen(text);
    int need = (int)len + 2;
    if (b->n + need > b->cap) {
        int cap = (b->n + need) * 2;
        int32_t *ids = realloc(b->ids, sizeof(int32_t) * (size_t)cap);
        if (ids) b->ids = ids;
        uint8_t *mask = realloc(b->mask, (size_t)cap);
        if (mask) b->mask = mask;
        if (!ids || !mask)
            return -1;
        b->cap = cap;
    }
    int got = engine_tokenize(m, text, len, bos, true, b->ids + b->n, b->cap - b->n);
    if (got < 0 || got > b->cap - b->n)
        return -1;
    memset(b->mask + b->n, scored, (size_t)got);
    b->n += got;
    return 0;
}

/* Truncates to max_len, finds where the last scored run starts, hands the arrays over. */
static int finish_example(example_builder *b, engine_train_example *out, char *err, size_t errsz)
{
    if (b->n > b->max_len)
        b->n = b->max_len;
    int last = -1;
    for (int i = b->n - 1; i >= 1; i--)
        if (b->mask[i]) {
            last = i;
            while (last > 1 && b->mask[last - 1])
                last--;
            break;
        }
    if (last < 1) {
        free(b->ids);
        free(b->mask);
        return engine_fail(err, errsz, "nothing to learn: no answer tokens within the first %d tokens",
                           b->max_len);
    }
    b->mask[0] = 0;  /* the first token is never predicted */
    *out = (engine_train_example){b->ids, b->mask, b->n, last};
    return 0;
}

int engine_train_encode_chat(const engine_model *m, const chat_message *msgs, size_t n,
                             int max_len, engine_train_example *out, char *err, size_t errsz)
{
    example_builder b = {.max_len = max_len};
    size_t done = 0;  /* bytes of the rendered conversation already tokenized */
    bool any = false;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(msgs[i].role, "assistant") != 0)
            continue;
        /* the text up to the assistant's header, then the answer with its end of turn */
        char *prefix = engine_render_chat(m, msgs, i, true);
        char *full = engine_render_chat(m, msgs, i + 1, false);
        int rc = 0;
        if (!prefix || !full || strlen(prefix) < done || strlen(full) < strlen(prefix) ||
            strncmp(prefix, full, strlen(prefix)) != 0)
            rc = engine_fail(err, errsz, "the chat template does not render this conversation turn by turn");
        else {
            rc = append_text(&b, m, prefix + done, done == 0 && engine_adds_bos(m), false) ||
                         append_text(&b, m, full + strlen(prefix), false, true)
                     ? engine_fail(err, errsz, "cannot tokenize the conversation")
                     : 0;
            done = strlen(full);
        }
        free(prefix);
        free(full);
        if (rc) {
            free(b.ids);
            free(b.mask);
            return -1;
        }
        any = true;
    }
    if (!any)
        return engine_fail(err, errsz, "the conversation has no assistant message to learn");
    return finish_example(&b, out, err, errsz);
}

int engine_train_encode_completion(const engine_model *m, const char *prompt, const char *completion,
                                   int max_len, engine_train_example *out, char *err, size_t errsz)
{
    example_builder b = {.max_len = max_len};
    if (append_text(&b, m, prompt, engine_adds_bos(m), false) ||
        append_text(&b, m, completion, false, true)) {
        free(b.ids);
        free(b.mask);
        return engine_fail(err, errsz, "cannot tokenize the example");
    }
    int32_t eos = tokenizer_eos(m->tok);
    if (eos >= 0 && b.n < b.cap) {  /* learn to stop after the completion */
        b.ids[b.n] = eos;
        b.mask[b.n++] = 1;
    }
    return finish_example(&b, out, err, errsz);
}

void engine_train_example_free(engine_train_example *e)
{
    free(e->ids);
    free(e->mask);
    e->ids = NULL;
    e->mask = NULL;
}

/* ---- trainer ---------------------------------------------------------------------- */

struct engine_trainer {
    engine_model *model;
    engine_train_options opt;
    const engine_train_example *train, *val;
    int n_train, n_val;
    train_ctx *ctx;
    llama_lora *lora, *grad, *adam_m, *adam_v;
    engine_adapter adapter;      /* lends lora to generations */
    int step;                    /* optimizer steps done */
    uint64_t consumed;           /* examples consumed: the data position */
    double best_val;             /* best validation loss so far (early stopping) */
    int evals_without_gain;
    int *order;                  /* the shuffle of order_epoch */
    uint64_t order_epoch;
};

engine_train_options engine_train_default_options(void)
{
    return (engine_train_options){
        .rank = 8, .alpha = 16, .dropout = 0, .mlp = false, .steps = 100, .lr = 1e-3f,
        .min_lr_ratio = 0.1f, .warmup_steps = -1, .weight_decay = 0, .grad_clip = 1.0f,
        .grad_accum = 4, .seq_len = 256, .seed = 42, .n_threads = 0, .eval_every = -1,
        .patience = 0, .checkpoint_every = 0, .checkpoint_path = NULL, .eval_generations = 16};
}

/* splitmix64: the job's only source of randomness, keyed explicitly. */
static uint64_t mix64(uint64_t z)
{
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* A = uniform in +-1/sqrt(in) (as PEFT's Kaiming init with a = sqrt(5)), B = 0. */
static void init_adapter(llama_lora *l, uint64_t seed)
{
    uint64_t k = mix64(seed ^ 0x4c6f5241ULL);
    for (size_t i = 0, n; lora_array(l, i, &n) != NULL; i += 2) {
        float *a = lora_array(l, i, &n);
        float bound = 1.0f / sqrtf((float)(n / (size_t)l->rank));
        for (size_t j = 0; j < n; j++)
            a[j] = ((float)(mix64(k++) >> 40) / (float)(1u << 24) * 2.0f - 1.0f) * bound;
    }
}

static int check_options(const engine_train_options *o, char *err, size_t errsz)
{
    if (o->rank < 1 || o->rank > 1024) return engine_fail(err, errsz, "rank must be 1..1024");
    if (o->dropout < 0 || o->dropout >= 1) return engine_fail(err, errsz, "dropout must be in [0, 1)");
    if (o->steps < 1) return engine_fail(err, errsz, "steps must be at least 1");
    if (!(o->lr > 0) || o->lr > 1) return engine_fail(err, errsz, "the learning rate must be in (0, 1]");
    if (o->grad_accum < 1) return engine_fail(err, errsz, "grad_accum must be at least 1");
    if (o->seq_len < 2) return engine_fail(err, errsz, "seq_len must be at least 2");
    return 0;
}

engine_trainer *engine_trainer_create(engine_model *m, const engine_train_options *opt,
                                      const engine_train_example *train, int n_train,
                                      const engine_train_example *val, int n_val, char *err, size_t errsz)
{
    if (check_options(opt, err, errsz))
        return NULL;
    if (n_train < 1) {
        engine_fail(err, errsz, "no training examples");
        return NULL;
    }
    engine_trainer *t = calloc(1, sizeof *t);
    if (t == NULL) {
        engine_fail(err, errsz, "out of memory");
        return NULL;
    }
    t->model = m;
    t->opt = *opt;
    if (t->opt.warmup_steps < 0) t->opt.warmup_steps = t->opt.steps / 20;
    if (t->opt.eval_every < 0) t->opt.eval_every = t->opt.steps / 10 > 0 ? t->opt.steps / 10 : 1;
    if (t->opt.n_threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        t->opt.n_threads = n > 0 ? (int)n : 1;
    }
    t->train = train;
    t->n_train = n_train;
    t->val = val;
    t->n_val = n_val;
    t->best_val = INFINITY;
    t->order_epoch = UINT64_MAX;
    unsigned targets = LORA_ATTENTION_TARGETS | (opt->mlp ? LORA_MLP_TARGETS : 0);
    t->lora = lora_create(m->llama, opt->rank, opt->alpha, targets);
    t->order = malloc(sizeof(int) * (size_t)n_train);
    if (!t->lora || !t->order || !(t->grad = lora_create_like(t->lora)) ||
        !(t->adam_m = lora_create_like(t->lora)) || !(t->adam_v = lora_create_like(t->lora))) {
        engine_fail(err, errsz, "out of memory");
        engine_trainer_free(t);
        return NULL;
    }
    if ((t->ctx = train_ctx_create(m->llama, opt->seq_len, t->opt.n_threads, err, errsz)) == NULL) {
        engine_trainer_free(t);
        return NULL;
    }
    init_adapter(t->lora, opt->seed);
    t->adapter = (engine_adapter){t->lora, m, engine_adapter_new_id()};
    return t;
}

void engine_trainer_free(engine_trainer *t)
{
    if (t == NULL)
        return;
    train_ctx_free(t->ctx);
    lora_free(t->lora);
    lora_free(t->grad);
    lora_free(t->adam_m);
    lora_free(t->adam_v);
    free(t->order);
    free(t);
}

int engine_trainer_steps_done(const engine_trainer *t) { return t->step; }
const engine_adapter *engine_trainer_adapter(const engine_trainer *t) { return &t->adapter; }

int engine_trainer_save_adapter(const engine_trainer *t, const char *path, char *err, size_t errsz)
{
    return lora_save(t->lora, path, err, errsz);
}

/* The k-th example of the job (see the top of the file). */
static const engine_train_example *example_at(engine_trainer *t, uint64_t k)
{
    uint64_t epoch = k / (uint64_t)t->n_train;
    if (epoch != t->order_epoch) {
        for (int i = 0; i < t->n_train; i++)
            t->order[i] = i;
        uint64_t key = mix64(t->opt.seed ^ mix64(epoch + 1));
        for (int i = t->n_train - 1; i > 0; i--) {  /* Fisher-Yates */
            int j = (int)(mix64(key + (uint64_t)i) % (uint64_t)(i + 1));
            int tmp = t->order[i];
            t->order[i] = t->order[j];
            t->order[j] = tmp;
        }
        t->order_epoch = epoch;
    }
    return &t->train[t->order[k % (uint64_t)t->n_train]];
}

static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int n_scored(const engine_train_example *e)
{
    int n = 0;
    for (int i = 1; i < e->n; i++)
        n += e->mask[i];
    return n;
}

static double learning_rate(const engine_train_options *o, int step)
{
    if (step < o->warmup_steps)
        return o->lr * (step + 1) / (double)o->warmup_steps;
    double span = o->steps - o->warmup_steps;
    double progress = span > 0 ? (step - o->warmup_steps) / span : 1.0;
    if (progress > 1) progress = 1;
    double min = o->lr * o->min_lr_ratio;
    return min + 0.5 * (o->lr - min) * (1.0 + cos(M_PI * progress));
}

static void zero_array(float *v, size_t n, void *user)
{
    (void)user;
    memset(v, 0, sizeof(float) * n);
}

static void add_square(float *v, size_t n, void *user)
{
    double *sum = user;
    for (size_t i = 0; i < n; i++)
        *sum += (double)v[i] * v[i];
}

/* AdamW on every array: p -= lr * (m_hat / (sqrt(v_hat) + eps) + wd * p). */
static void adamw_update(engine_trainer *t, double lr, float grad_mult)
{
    const double b1 = 0.9, b2 = 0.999, eps = 1e-8;
    double c1 = 1.0 - pow(b1, t->step + 1), c2 = 1.0 - pow(b2, t->step + 1);
    size_t n;
    for (size_t i = 0; lora_array(t->lora, i, &n) != NULL; i++) {
        float *p = lora_array(t->lora, i, &n), *g = lora_array(t->grad, i, &n);
        float *m = lora_array(t->adam_m, i, &n), *v = lora_array(t->adam_v, i, &n);
        for (size_t j = 0; j < n; j++) {
            float gj = g[j] * grad_mult;
            m[j] = (float)(b1 * m[j] + (1 - b1) * gj);
            v[j] = (float)(b2 * v[j] + (1 - b2) * gj * gj);
            double update = (m[j] / c1) / (sqrt(v[j] / c2) + eps) + t->opt.weight_decay * p[j];
            p[j] -= (float)(lr * update);
        }
    }
}

int engine_trainer_step(engine_trainer *t, engine_train_step *info, char *err, size_t errsz)
{
    double t0 = engine_now(), cpu0 = cpu_now();
    int accum = t->opt.grad_accum, total = 0, tokens = 0;
    for (int i = 0; i < accum; i++)
        total += n_scored(example_at(t, t->consumed + (uint64_t)i));
    lora_for_each_array(t->grad, zero_array, NULL);
    double loss = 0.0;
    for (int i = 0; i < accum; i++) {
        uint64_t k = t->consumed + (uint64_t)i;
        const engine_train_example *e = example_at(t, k);
        int n = e->n < t->opt.seq_len + 1 ? e->n : t->opt.seq_len + 1, scored;
        train_pass pass = {t->opt.dropout, mix64(t->opt.seed ^ mix64(k ^ 0x64726f70ULL)),
                           total ? 1.0f / (float)total : 0.0f};
        double l = train_sequence(t->ctx, t->lora, t->grad, e->ids, e->mask, n, &pass, &scored);
        if (l < 0)
            return engine_fail(err, errsz, "example %llu does not fit the model", (unsigned long long)k);
        loss += l;
        tokens += n - 1;
    }
    double norm2 = 0.0;
    lora_for_each_array(t->grad, add_square, &norm2);
    double norm = sqrt(norm2), lr = learning_rate(&t->opt, t->step);
    float mult = t->opt.grad_clip > 0 && norm > t->opt.grad_clip ? (float)(t->opt.grad_clip / norm) : 1.0f;
    if (total > 0)
        adamw_update(t, lr, mult);
    t->consumed += (uint64_t)accum;
    t->step++;
    if (info)
        *info = (engine_train_step){t->step, total ? loss / total : 0.0, lr, norm, tokens, engine_now() - t0,
                                    cpu_now() - cpu0};
    return 0;
}

double engine_trainer_val_loss(engine_trainer *t, int *n_tokens)
{
    double sum = 0.0;
    int count = 0;
    for (int i = 0; i < t->n_val; i++) {
        const engine_train_example *e = &t->val[i];
        int n = e->n < t->opt.seq_len + 1 ? e->n : t->opt.seq_len + 1, scored;
        double l = train_sequence(t->ctx, t->lora, NULL, e->ids, e->mask, n, NULL, &scored);
        if (l >= 0) {
            sum += l;
            count += scored;
        }
    }
    if (n_tokens)
        *n_tokens = count;
    return count ? sum / count : NAN;
}

/* ---- checkpoints ------------------------------------------------------------------ */

int engine_trainer_checkpoint(engine_trainer *t, const char *path, char *err, size_t errsz)
{
    gguf_writer *w = gguf_writer_create();
    if (w == NULL)
        return engine_fail(err, errsz, "out of memory");
    char num[64];
    gguf_writer_add_str(w, "general.type", "citadel.train.checkpoint");
    gguf_writer_add_str(w, "general.architecture", t->lora->arch);
    gguf_writer_add_u32(w, "train.rank", (uint32_t)t->lora->rank);
    gguf_writer_add_u32(w, "train.targets", t->lora->targets);
    gguf_writer_add_u32(w, "train.step", (uint32_t)t->step);
    snprintf(num, sizeof num, "%llu", (unsigned long long)t->consumed);
    gguf_writer_add_str(w, "train.consumed", num);
    snprintf(num, sizeof num, "%a", t->best_val);  /* hex: the exact double comes back */
    gguf_writer_add_str(w, "train.best_val", num);
    gguf_writer_add_u32(w, "train.evals_without_gain", (uint32_t)t->evals_without_gain);
    lora_write_tensors(t->lora, w, "");
    lora_write_tensors(t->adam_m, w, "adam_m.");
    lora_write_tensors(t->adam_v, w, "adam_v.");
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int rc = gguf_writer_save(w, tmp, err, errsz);
    gguf_writer_free(w);
    if (rc == 0 && rename(tmp, path) != 0)
        rc = engine_fail(err, errsz, "cannot rename %s to %s", tmp, path);
    return rc;
}

int engine_trainer_resume(engine_trainer *t, const char *path, char *err, size_t errsz)
{
    if (access(path, F_OK) != 0)
        return 0;
    gguf_file *f;
    char sub[256];
    if (gguf_open(&f, path, sub, sizeof sub))
        return engine_fail(err, errsz, "checkpoint %s: %s", path, sub);
    uint64_t rank = 0, targets = 0, step = 0, gains = 0;
    gguf_str type, consumed, best;
    int rc = -1;
    if (!gguf_get_str(f, "general.type", &type) || !gguf_str_eq(type, "citadel.train.checkpoint") ||
        !gguf_get_u64(f, "train.rank", &rank) || !gguf_get_u64(f, "train.targets", &targets) ||
        !gguf_get_u64(f, "train.step", &step) || !gguf_get_str(f, "train.consumed", &consumed) ||
        !gguf_get_str(f, "train.best_val", &best) ||
        !gguf_get_u64(f, "train.evals_without_gain", &gains))
        engine_fail(err, errsz, "checkpoint %s: not a training checkpoint", path);
    else if ((int)rank != t->lora->rank || (unsigned)targets != t->lora->targets)
        engine_fail(err, errsz, "checkpoint %s: made with rank %d and other targets than this job's",
                    path, (int)rank);
    else if (lora_read_tensors(t->lora, f, "", sub, sizeof sub) ||
             lora_read_tensors(t->adam_m, f, "adam_m.", sub, sizeof sub) ||
             lora_read_tensors(t->adam_v, f, "adam_v.", sub, sizeof sub))
        engine_fail(err, errsz, "checkpoint %s: %s", path, sub);
    else {
        char buf[64];
        snprintf(buf, sizeof buf, "%.*s", (int)(consumed.len < 63 ? consumed.len : 63), consumed.ptr);
        t->consumed = strtoull(buf, NULL, 10);
        snprintf(buf, sizeof buf, "%.*s", (int)(best.len < 63 ? best.len : 63), best.ptr);
        t->best_val = strtod(buf, NULL);
        t->step = (int)step;
        t->evals_without_gain = (int)gains;
        rc = 1;
    }
    gguf_close(f);
    return rc;
}

/* ---- evaluation ------------------------------------------------------------------- */

/* The text of ids[0..n), end-of-generation tokens left out. malloc'd. */
static char *detokenize(const engine_model *m, const int32_t *ids, int n)
{
    size_t cap = 64, len = 0;
    char *out = malloc(cap);
    for (int i = 0; out && i < n; i++) {
        if (engine_is_eog(m, ids[i]))
            continue;
        char piece[256];
        int k = engine_token_text(m, ids[i], piece, sizeof piece);
        if (k <= 0 || k > (int)sizeof piece)
            continue;
        if (len + (size_t)k + 1 > cap) {
            char *bigger = realloc(out, cap = (len + (size_t)k + 1) * 2);
            if (bigger == NULL) { free(out); return NULL; }
            out = bigger;
        }
        memcpy(out + len, piece, (size_t)k);
        len += (size_t)k;
    }
    if (out) out[len] = '\0';
    return out;
}

int engine_trainer_generation_scores(engine_trainer *t, engine_train_scores *out, char *err, size_t errsz)
{
    int n = t->n_val < t->opt.eval_generations ? t->n_val : t->opt.eval_generations;
    *out = (engine_train_scores){0, 0, 0};
    if (n <= 0)
        return 0;
    engine_session *s = engine_session_create(t->model, &(engine_session_options){
        .n_ctx = t->opt.seq_len * 2 + 16, .n_threads = t->opt.n_threads});
    char **hyps = calloc((size_t)n, sizeof *hyps), **refs = calloc((size_t)n, sizeof *refs);
    int rc = s && hyps && refs ? 0 : engine_fail(err, errsz, "out of memory");
    for (int i = 0; i < n && rc == 0; i++) {
        const engine_train_example *e = &t->val[i];
        engine_gen_params p = engine_default_gen_params();
        p.adapter = &t->adapter;
        p.sampling.temperature = 0;
        p.max_tokens = e->n - e->prompt_len + 8;
        engine_gen_result r;
        if (engine_generate(s, e->ids, e->prompt_len, &p, NULL, NULL, &r, err, errsz)) {
            rc = -1;
            break;
        }
        hyps[i] = detokenize(t->model, r.ids, r.n_generated);
        refs[i] = detokenize(t->model, e->ids + e->prompt_len, e->n - e->prompt_len);
        engine_gen_result_free(&r);
        if (!hyps[i] || !refs[i])
            rc = engine_fail(err, errsz, "out of memory");
    }
    if (rc == 0) {
        out->bleu = engine_bleu((const char *const *)hyps, (const char *const *)refs, n);
        out->rouge_l = engine_rouge_l((const char *const *)hyps, (const char *const *)refs, n);
        out->n = n;
    }
    for (int i = 0; i < n && hyps && refs; i++) {
        free(hyps[i]);
        free(refs[i]);
    }
    free(hyps);
    free(refs);
    engine_session_free(s);
    return rc;
}

/* ---- the job ---------------------------------------------------------------------- */

static bool emit(engine_train_event_fn fn, void *user, engine_train_event ev)
{
    return fn == NULL || fn(&ev, user);
}

/* Validation, with the early-stopping bookkeeping. False when patience ran out. */
static bool evaluate(engine_trainer *t, engine_train_event_fn fn, void *user, bool *stop)
{
    double val = engine_trainer_val_loss(t, NULL);
    if (isnan(val))
        return true;
    if (val < t->best_val - 1e-4) {
        t->best_val = val;
        t->evals_without_gain = 0;
    } else {
        t->evals_without_gain++;
    }
    engine_train_event ev = {.kind = ENGINE_TRAIN_EVAL, .step = {.step = t->step}, .val_loss = val,
                             .perplexity = exp(val)};
    *stop = !emit(fn, user, ev);
    return t->opt.patience <= 0 || t->evals_without_gain < t->opt.patience;
}

int engine_trainer_run(engine_trainer *t, engine_train_event_fn on_event, void *user, char *err, size_t errsz)
{
    const engine_train_options *o = &t->opt;
    if (o->patience > 0 && t->evals_without_gain >= o->patience)
        return 0;  /* resumed from the checkpoint of a job that had stopped early */
    while (t->step < o->steps) {
        engine_train_step info;
        if (engine_trainer_step(t, &info, err, errsz))
            return -1;
        bool stop = !emit(on_event, user, (engine_train_event){.kind = ENGINE_TRAIN_STEP, .step = info});
        bool patient = true;
        if (o->eval_every > 0 && t->step % o->eval_every == 0 && t->step < o->steps)
            patient = evaluate(t, on_event, user, &stop);
        bool last = t->step == o->steps || !patient || stop;
        if (o->checkpoint_path && o->checkpoint_every > 0 && (t->step % o->checkpoint_every == 0 || last)) {
            if (engine_trainer_checkpoint(t, o->checkpoint_path, err, errsz))
                return -1;
            emit(on_event, user, (engine_train_event){.kind = ENGINE_TRAIN_CHECKPOINT, .step = info});
        }
        if (!patient) {
            emit(on_event, user, (engine_train_event){.kind = ENGINE_TRAIN_EARLY_STOP, .step = info});
            break;
        }
        if (stop)
            break;
    }
    return 0;
}
