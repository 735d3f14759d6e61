/* engine_batch.c - continuous batching over one model and one paged KV cache
 * (engine.h, "batches").
 *
 * Each step builds one llama_forward_batch: one token for every sequence that is
 * generating (so a long prompt never stalls them), and chunks of the prompts still
 * being read, while the step's token budget lasts. After the pass, every sequence that
 * got logits takes one generation_step, exactly as engine_generate would, which is why
 * a sequence gives the same tokens alone or in a batch.
 *
 * Memory: the sequences draw blocks from one kv_cache (model/kv_cache.h). A sequence
 * about to read its prompt first takes whatever leading blocks of it the prefix index
 * holds, and only computes the rest; every block it fills is indexed for the next ones.
 * Steps are planned oldest sequence first; when one needs a block and none is left, the
 * newest sequences are preempted: their blocks go back, and they read their history
 * (prompt + generated tokens) again later as if it were a prompt. The kernels compute
 * each token independently of what else is in the pass, so the recomputed cache, and
 * the tokens that follow, are exactly those of an undisturbed run. The cache always
 * holds one full context, so the oldest sequence can always go on.
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
    uint64_t order;         /* arrival number: under memory pressure the newest yield */
    kv_seq kv;              /* its block table in the batch's cache */
    int32_t *tokens;        /* prompt, then generated tokens: the history, n_ctx entries */
    int n_prompt;
    int n_feed, n_fed;      /* tokens to read before the next sample (the prompt, or after
                             * a preemption the whole history), and how many have been */
    bool looked_up;         /* the prefix index was consulted for this reading */
    bool counted;           /* ... and for the first reading (the hit ratio's) */
    bool generating;        /* reading is done: each step runs `next` */
    int n_cached;           /* prompt tokens the prefix cache supplied on admission */
    int32_t next;
    float *logits;          /* V */
    const struct llama_lora *lora;   /* the adapter it runs with, or NULL */
    generation gen;
    engine_done_fn on_done;
    void *user;
    double t_added, t_prompt_done;
} batch_seq;

struct engine_batch {
    engine_model *m;
    llama_state *work;      /* activations and thread pool for the whole batch */
    kv_cache *cache;
    int n_ctx, max_seqs, step_tokens;
    uint64_t next_order;
    batch_seq *seqs;
    batch_seq **by_age;     /* a step's sequences, oldest first */
    llama_batch_seq *entries;
    batch_seq **entry_seq;  /* which sequence each entry of the step belongs to */
    uint64_t lookup_tokens, hit_tokens, prefill_tokens, preemptions;
};

size_t engine_kv_bytes_per_token(const engine_model *m, enum kv_dtype dtype)
{
    kv_cache_shape shape = llama_kv_shape(m->llama, dtype, 1);
    return kv_block_bytes(&shape);
}

/* The paged cache for these options: at least one full context. */
static kv_cache *create_cache(engine_model *m, const engine_batch_options *o, char *err, size_t errsz)
{
    kv_cache_shape shape = llama_kv_shape(m->llama, o->kv_dtype, o->kv_block_tokens);
    size_t block_bytes = kv_block_bytes(&shape);
    int per_ctx = (o->n_ctx + o->kv_block_tokens - 1) / o->kv_block_tokens;
    size_t n_blocks = o->kv_cache_bytes ? o->kv_cache_bytes / (block_bytes ? block_bytes : 1)
                                        : (size_t)per_ctx * (size_t)o->max_seqs;
    if (n_blocks < (size_t)per_ctx) {
        engine_fail(err, errsz,
                    "a KV cache of %.1f MiB holds %zu tokens (%s); one context of %d tokens needs %.1f MiB",
                    o->kv_cache_bytes / 1048576.0, n_blocks * (size_t)o->kv_block_tokens,
                    kv_dtype_name(o->kv_dtype), o->n_ctx, (double)per_ctx * block_bytes / 1048576.0);
        return NULL;
    }
    if (n_blocks > (1u << 30))
        n_blocks = 1u << 30;
    return kv_cache_create(&shape, (int)n_blocks, err, errsz);
}

engine_batch *engine_batch_create(engine_model *m, const engine_batch_options *opt, char *err, size_t errsz)
{
    engine_batch_options o = opt ? *opt : (engine_batch_options){0};
    int train = m->llama->hp.n_ctx_train;
    if (o.n_ctx <= 0) o.n_ctx = train < 2048 ? train : 2048;
    if (o.max_seqs <= 0) o.max_seqs = 16;
    if (o.step_tokens <= 0) o.step_tokens = 256;
    if (o.kv_block_tokens <= 0) o.kv_block_tokens = KV_DEFAULT_BLOCK_TOKENS;
    if (o.n_threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        o.n_threads = n > 0 ? (int)n : 1;
    }
    engine_batch *b = calloc(1, sizeof *b);
    if (b == NULL) {
        engine_fail(err, errsz, "out of memory");
        return NULL;
    }
    b->m = m;
    b->n_ctx = o.n_ctx;
    b->max_seqs = o.max_seqs;
    b->step_tokens = o.step_tokens;
    b->cache = create_cache(m, &o, err, errsz);
    if (b->cache == NULL) {
        engine_batch_free(b);
        return NULL;
    }
    /* decodes are never cut, so a step may hold max_seqs tokens beyond the budget */
    b->work = llama_workspace_create(m->llama, o.n_ctx, o.step_tokens + o.max_seqs, o.n_threads);
    b->seqs = calloc((size_t)o.max_seqs, sizeof *b->seqs);
    b->by_age = calloc((size_t)o.max_seqs, sizeof *b->by_age);
    b->entries = calloc((size_t)o.max_seqs, sizeof *b->entries);
    b->entry_seq = calloc((size_t)o.max_seqs, sizeof *b->entry_seq);
    if (!b->work || !b->seqs || !b->by_age || !b->entries || !b->entry_seq) {
        engine_fail(err, errsz, "out of memory");
        engine_batch_free(b);
        return NULL;
    }
    return b;
}

static void release_seq(batch_seq *q)
{
    if (q->kv.cache)
        kv_seq_release(&q->kv);
    free(q->tokens);
    free(q->logits);
    generation_abort(&q->gen);
    memset(q, 0, sizeof *q);
}

/* Reports the sequence's result to its owner and frees its slot. */
static void finish_seq(batch_seq *q)
{
    engine_gen_result r;
    double t = engine_now();
    generation_end(&q->gen, &r);
    r.n_prompt = q->n_prompt;
    r.n_cached = q->n_cached;
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
    kv_cache_free(b->cache);
    free(b->seqs);
    free(b->by_age);
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
    *q = (batch_seq){.used = true, .id = id, .order = b->next_order++, .n_prompt = n_prompt,
                     .n_feed = n_prompt, .on_done = on_done, .user = user, .t_added = engine_now()};
    kv_seq_init(&q->kv, b->cache);
    q->tokens = malloc(sizeof(int32_t) * (size_t)b->n_ctx);
    q->logits = malloc(sizeof(float) * (size_t)V);
    if (!q->tokens || !q->logits ||
        generation_begin(&q->gen, b->m->tok, V, params, b->n_ctx, on_token, user)) {
        release_seq(q);
        return engine_fail(err, errsz, "out of memory");
    }
    memcpy(q->tokens, prompt, sizeof(int32_t) * (size_t)n_prompt);
    if (params->adapter && params->adapter->model != b->m) {
        release_seq(q);
        return engine_fail(err, errsz, "the adapter was opened for another model");
    }
    /* an adapter's keys and values are its own: its sequences share blocks only
     * among themselves */
    q->lora = params->adapter ? params->adapter->lora : NULL;
    kv_seq_set_namespace(&q->kv, params->adapter ? params->adapter->id : 0);
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

engine_batch_stats engine_batch_get_stats(const engine_batch *b)
{
    kv_cache_stats kv = kv_cache_get_stats(b->cache);
    const kv_cache_shape *shape = kv_cache_get_shape(b->cache);
    return (engine_batch_stats){
        .kv_blocks_total = kv.n_blocks,
        .kv_blocks_used = kv.used,
        .kv_blocks_free = kv.free + kv.cached,
        .kv_blocks_cached = kv.cached,
        .kv_block_tokens = shape->block_tokens,
        .kv_block_bytes = kv_block_bytes(shape),
        .prefix_lookup_tokens = b->lookup_tokens,
        .prefix_hit_tokens = b->hit_tokens,
        .prefill_tokens = b->prefill_tokens,
        .preemptions = b->preemptions,
        .evictions = kv.evictions,
    };
}

/* ---- planning a step ---------------------------------------------------------------- */

static int by_order(const void *a, const void *b)
{
    uint64_t x = (*(batch_seq *const *)a)->order, y = (*(batch_seq *const *)b)->order;
    return x < y ? -1 : x > y;
}

/* Fills b->by_age with the running sequences, oldest first; returns their count. */
static int sort_by_age(engine_batch *b)
{
    int n = 0;
    for (int i = 0; i < b->max_seqs; i++)
        if (b->seqs[i].used) b->by_age[n++] = &b->seqs[i];
    qsort(b->by_age, (size_t)n, sizeof *b->by_age, by_order);
    return n;
}

/* Gives up the sequence's blocks: it will read its history again, from the start. */
static void preempt(engine_batch *b, batch_seq *q)
{
    if (q->generating)
        q->n_feed = q->kv.n_tokens + 1;   /* the history, and `next`, already in tokens */
    kv_seq_release(&q->kv);
    q->n_fed = 0;
    q->looked_up = false;
    q->generating = false;
    b->preemptions++;
}

/* Before a sequence reads: the leading blocks of what it has to read that the prefix
 * index holds, but never the last token, whose logits it needs. The first reading of
 * the prompt counts for the hit ratio; readings after a preemption do not. */
static void look_up_prefix(engine_batch *b, batch_seq *q)
{
    if (q->looked_up)
        return;
    q->looked_up = true;
    q->n_fed = kv_seq_match_prefix(&q->kv, q->tokens, q->n_feed - 1);
    if (!q->counted) {
        q->counted = true;
        q->n_cached = q->n_fed;
        b->lookup_tokens += (uint64_t)q->n_prompt;
        b->hit_tokens += (uint64_t)q->n_fed;
    }
}

/* Room for q (the by_age[age]) to run up to `want` more tokens: blocks from the pool,
 * and while the pool cannot give it `need` positions, the newest sequences younger
 * than q are preempted. Reserves the blocks; returns how many tokens q may run. */
static int make_room(engine_batch *b, int age, int n_running, int need, int want)
{
    batch_seq *q = b->by_age[age];
    int BT = kv_cache_get_shape(b->cache)->block_tokens;
    for (int victim = n_running - 1; victim > age; victim--) {
        if (kv_seq_spare(&q->kv) + kv_cache_available(b->cache) * BT >= need)
            break;
        if (b->by_age[victim]->kv.n_blocks > 0)
            preempt(b, b->by_age[victim]);
    }
    int room = kv_seq_spare(&q->kv) + kv_cache_available(b->cache) * BT;
    int take = want < room ? want : room;
    if (take > 0 && kv_seq_reserve(&q->kv, q->kv.n_tokens + take))
        take = 0;   /* only when the block table cannot grow (out of memory) */
    return take;
}

/* This step's entries, oldest sequence first: each generating sequence's next token,
 * and prompt chunks while the budget lasts. */
static int plan_step(engine_batch *b)
{
    int n_running = sort_by_age(b), n_generating = 0, n = 0;
    for (int i = 0; i < n_running; i++)
        n_generating += b->by_age[i]->generating;
    /* prompts always get some of the step, so many decodes cannot starve them */
    int budget = b->step_tokens - n_generating, floor = b->step_tokens / 4 > 1 ? b->step_tokens / 4 : 1;
    if (budget < floor) budget = floor;
    for (int i = 0; i < n_running; i++) {
        batch_seq *q = b->by_age[i];
        if (q->generating) {
            if (make_room(b, i, n_running, 1, 1) == 0) {
                preempt(b, q);   /* nobody younger holds blocks: q waits for the older ones */
                continue;
            }
            b->entries[n] = (llama_batch_seq){&q->kv, &q->next, 1, q->logits, q->lora};
            b->entry_seq[n++] = q;
        } else if (budget > 0) {
            look_up_prefix(b, q);
            int want = q->n_feed - q->n_fed < budget ? q->n_feed - q->n_fed : budget;
            int take = make_room(b, i, n_running, 1, want);
            if (take == 0) continue;
            bool last = q->n_fed + take == q->n_feed;
            b->entries[n] = (llama_batch_seq){&q->kv, q->tokens + q->n_fed, take, last ? q->logits : NULL, q->lora};
            b->entry_seq[n++] = q;
            budget -= take;
            b->prefill_tokens += (uint64_t)take;
        }
    }
    return n;
}

/* After the pass: new full blocks into the prefix index, reading progress, and one
 * generation step where logits came out. */
static void advance(engine_batch *b, int n_entries)
{
    for (int e = 0; e < n_entries; e++) {
        batch_seq *q = b->entry_seq[e];
        kv_seq_publish(&q->kv, q->tokens);
        if (!q->generating) {
            q->n_fed += b->entries[e].n;
            if (q->n_fed < q->n_feed) continue;
            if (q->t_prompt_done == 0) q->t_prompt_done = engine_now();
        }
        int n_past = q->kv.n_tokens;
        int32_t next;
        if (generation_step(&q->gen, q->logits, q->tokens, n_past, b->n_ctx, &next)) {
            q->tokens[n_past] = next;
            q->next = next;
            q->generating = true;
        } else {
            finish_seq(q);
        }
    }
}

int engine_batch_step(engine_batch *b)
{
    for (int i = 0; i < b->max_seqs; i++)
        if (b->seqs[i].used && b->seqs[i].cancelled) {
            b->seqs[i].gen.r.finish = ENGINE_FINISH_CANCELLED;
            finish_seq(&b->seqs[i]);
        }
    int n = plan_step(b);
    if (n == 0) return engine_batch_active(b);
    if (llama_forward_batch(b->work, b->entries, n)) {
        for (int i = 0; i < b->max_seqs; i++)
            if (b->seqs[i].used) {
                b->seqs[i].gen.r.finish = ENGINE_FINISH_CANCELLED;
                finish_seq(&b->seqs[i]);
            }
        return -1;
    }
    advance(b, n);
    return engine_batch_active(b);
}
