/* engine_batch.c - continuous batching over one model (engine.h, "batches").
 *
 * Each step builds one llama_forward_batch: first one token for every sequence that is
 * generating (so a long prompt never stalls them), then chunks of the prompts still
 * being read, while the step's token budget lasts. After the pass, every sequence that
 * got logits takes one generation_step, exactly as engine_generate would, which is why
 * a sequence gives the same tokens alone or in a batch.
 *
 * Each sequence owns a full KV cache of n_ctx positions for now; the paged cache with
 * shared prefix blocks (issue 4) replaces that.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine_model.h"
#include "generation.h"

typedef struct batch_seq {
    bool used, cancelled;
    uint64_t id;
    llama_state *state;     /* this sequence's KV cache */
    int32_t *tokens;        /* prompt, then generated tokens: the history, n_ctx entries */
    int n_prompt, n_fed;    /* prompt tokens, and how many have been run */
    bool generating;        /* the prompt is done: each step runs `next` */
    int32_t next;
    float *logits;          /* V */
    generation gen;
    engine_done_fn on_done;
    void *user;
    double t_added, t_prompt_done;
} batch_seq;

struct engine_batch {
    engine_model *m;
    llama_state *work;      /* activations and thread pool for the whole batch */
    int n_ctx, max_seqs, step_tokens;
    batch_seq *seqs;
    llama_batch_seq *entries;
    batch_seq **entry_seq;  /* which sequence each entry of the step belongs to */
};

engine_batch *engine_batch_create(engine_model *m, const engine_batch_options *opt)
{
    engine_batch_options o = opt ? *opt : (engine_batch_options){0};
    int train = m->llama->hp.n_ctx_train;
    if (o.n_ctx <= 0) o.n_ctx = train < 2048 ? train : 2048;
    if (o.max_seqs <= 0) o.max_seqs = 16;
    if (o.step_tokens <= 0) o.step_tokens = 256;
    if (o.n_threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        o.n_threads = n > 0 ? (int)n : 1;
    }
    engine_batch *b = calloc(1, sizeof *b);
    if (b == NULL) return NULL;
    b->m = m;
    b->n_ctx = o.n_ctx;
    b->max_seqs = o.max_seqs;
    b->step_tokens = o.step_tokens;
    /* decodes are never cut, so a step may hold max_seqs tokens beyond the budget */
    b->work = llama_workspace_create(m->llama, o.n_ctx, o.step_tokens + o.max_seqs, o.n_threads);
    b->seqs = calloc((size_t)o.max_seqs, sizeof *b->seqs);
    b->entries = calloc((size_t)o.max_seqs, sizeof *b->entries);
    b->entry_seq = calloc((size_t)o.max_seqs, sizeof *b->entry_seq);
    if (!b->work || !b->seqs || !b->entries || !b->entry_seq) {
        engine_batch_free(b);
        return NULL;
    }
    return b;
}

static void release_seq(batch_seq *q)
{
    llama_state_free(q->state);
    free(q->tokens);
    free(q->logits);
    generation_abort(&q->gen);
    memset(q, 0, sizeof *q);
}

/* Reports the sequence's result to its owner and frees its slot. */
static void finish_seq(engine_batch *b, batch_seq *q)
{
    (void)b;
    engine_gen_result r;
    double t = engine_now();
    generation_end(&q->gen, &r);
    r.n_prompt = q->n_prompt;
    r.prefill_seconds = (q->t_prompt_done > 0 ? q->t_prompt_done : t) - q->t_added;
    r.decode_seconds = q->t_prompt_done > 0 ? t - q->t_prompt_done : 0.0;
    if (q->on_done) q->on_done(q->id, &r, q->user);
    engine_gen_result_free(&r);
    release_seq(q);
}

void engine_batch_free(engine_batch *b)
{
    if (b == NULL) return;
    for (int i = 0; b->seqs && i < b->max_seqs; i++)
        if (b->seqs[i].used) release_seq(&b->seqs[i]);
    llama_state_free(b->work);
    free(b->seqs);
    free(b->entries);
    free(b->entry_seq);
    free(b);
}

int engine_batch_add(engine_batch *b, uint64_t id, const int32_t *prompt, int n_prompt,
                     const engine_gen_params *params, engine_token_fn on_token, engine_done_fn on_done,
                     void *user, char *err, size_t errsz)
{
    int V = b->m->llama->hp.n_vocab;
    if (n_prompt <= 0) return engine_fail(err, errsz, "the prompt is empty");
    if (n_prompt >= b->n_ctx)
        return engine_fail(err, errsz, "the prompt has %d tokens; the context holds %d", n_prompt, b->n_ctx);
    for (int i = 0; i < n_prompt; i++)
        if (prompt[i] < 0 || prompt[i] >= V)
            return engine_fail(err, errsz, "token id %d is out of range (vocabulary %d)", prompt[i], V);
    batch_seq *q = NULL;
    for (int i = 0; i < b->max_seqs && q == NULL; i++)
        if (!b->seqs[i].used) q = &b->seqs[i];
    if (q == NULL) return engine_fail(err, errsz, "the batch is full (%d sequences)", b->max_seqs);
    *q = (batch_seq){.used = true, .id = id, .n_prompt = n_prompt, .on_done = on_done, .user = user,
                     .t_added = engine_now()};
    q->state = llama_state_create(b->m->llama, b->n_ctx, 1, 1);
    q->tokens = malloc(sizeof(int32_t) * (size_t)b->n_ctx);
    q->logits = malloc(sizeof(float) * (size_t)V);
    if (!q->state || !q->tokens || !q->logits ||
        generation_begin(&q->gen, b->m->tok, V, params, b->n_ctx, on_token, user)) {
        release_seq(q);
        return engine_fail(err, errsz, "out of memory");
    }
    memcpy(q->tokens, prompt, sizeof(int32_t) * (size_t)n_prompt);
    if (params->adapter && params->adapter->model != b->m) {
        release_seq(q);
        return engine_fail(err, errsz, "the adapter was opened for another model");
    }
    llama_state_set_lora(q->state, params->adapter ? params->adapter->lora : NULL);
    return 0;
}

bool engine_batch_cancel(engine_batch *b, uint64_t id)
{
    for (int i = 0; i < b->max_seqs; i++)
        if (b->seqs[i].used && b->seqs[i].id == id) {
            b->seqs[i].cancelled = true;
            return true;
        }
    return false;
}

int engine_batch_active(const engine_batch *b)
{
    int n = 0;
    for (int i = 0; i < b->max_seqs; i++)
        n += b->seqs[i].used;
    return n;
}

/* This step's entries: every generating sequence's next token, then prompt chunks. */
static int plan_step(engine_batch *b)
{
    int n = 0, budget = b->step_tokens;
    for (int i = 0; i < b->max_seqs; i++) {
        batch_seq *q = &b->seqs[i];
        if (!q->used || !q->generating) continue;
        b->entries[n] = (llama_batch_seq){q->state, &q->next, 1, q->logits};
        b->entry_seq[n++] = q;
        budget--;
    }
    /* prompts always get some of the step, so many decodes cannot starve them */
    int floor = b->step_tokens / 4 > 1 ? b->step_tokens / 4 : 1;
    if (budget < floor) budget = floor;
    for (int i = 0; i < b->max_seqs && budget > 0; i++) {
        batch_seq *q = &b->seqs[i];
        if (!q->used || q->generating) continue;
        int take = q->n_prompt - q->n_fed < budget ? q->n_prompt - q->n_fed : budget;
        bool last = q->n_fed + take == q->n_prompt;
        b->entries[n] = (llama_batch_seq){q->state, q->tokens + q->n_fed, take, last ? q->logits : NULL};
        b->entry_seq[n++] = q;
        budget -= take;
    }
    return n;
}

/* After the pass: prompt progress, and one generation step where logits came out. */
static void advance(engine_batch *b, int n_entries)
{
    for (int e = 0; e < n_entries; e++) {
        batch_seq *q = b->entry_seq[e];
        if (!q->generating) {
            q->n_fed += b->entries[e].n;
            if (q->n_fed < q->n_prompt) continue;
            q->t_prompt_done = engine_now();
        }
        int n_past = llama_state_n_past(q->state);
        int32_t next;
        if (generation_step(&q->gen, q->logits, q->tokens, n_past, b->n_ctx, &next)) {
            q->tokens[n_past] = next;
            q->next = next;
            q->generating = true;
        } else {
            finish_seq(b, q);
        }
    }
}

int engine_batch_step(engine_batch *b)
{
    for (int i = 0; i < b->max_seqs; i++)
        if (b->seqs[i].used && b->seqs[i].cancelled) {
            b->seqs[i].gen.r.finish = ENGINE_FINISH_CANCELLED;
            finish_seq(b, &b->seqs[i]);
        }
    int n = plan_step(b);
    if (n == 0) return engine_batch_active(b);
    if (llama_forward_batch(b->work, b->entries, n)) {
        for (int i = 0; i < b->max_seqs; i++)
            if (b->seqs[i].used) {
                b->seqs[i].gen.r.finish = ENGINE_FINISH_CANCELLED;
                finish_seq(b, &b->seqs[i]);
            }
        return -1;
    }
    advance(b, n);
    return engine_batch_active(b);
}
