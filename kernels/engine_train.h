/* engine_train.h - the engine's fine-tuning face: LoRA training of a loaded model on
 * tokenized examples, for `citadel train` and citadel-trainer (services include this and
 * engine.h, nothing else of kernels/).
 *
 * A trainer owns an adapter (rank r on the attention projections, optionally the MLP's),
 * its AdamW moments and a position in the data. One step takes grad_accum examples in a
 * seeded shuffled order (a new order each epoch), adds their gradients (loss: the mean
 * cross-entropy of their masked tokens), clips the global norm, and moves the adapter
 * with AdamW at a learning rate that warms up linearly and then decays on a cosine.
 * Everything that decides a step is a function of the seed and the step number, so a
 * run restored from a checkpoint continues exactly as the uninterrupted run would.
 *
 * Typical use:
 *   t = engine_trainer_create(m, &opt, train, n_train, val, n_val, err, sizeof err);
 *   engine_trainer_resume(t, ckpt, ...);          (continues a killed job, if any)
 *   engine_trainer_run(t, on_event, user, ...);   (steps, evaluations, checkpoints)
 *   engine_trainer_save_adapter(t, "a.gguf", ...);
 */
#ifndef CITADEL_ENGINE_TRAIN_H
#define CITADEL_ENGINE_TRAIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine.h"

/* ---- examples --------------------------------------------------------------------- */

/* One training example: token ids and, for each, whether it is scored (a token of an
 * assistant answer or a completion). prompt_len is where the last scored run starts:
 * ids[0..prompt_len) is the prompt of the held-out generation test. */
typedef struct engine_train_example {
    int32_t *ids;
    uint8_t *mask;
    int n, prompt_len;
} engine_train_example;

/* Chat messages rendered with the model's template; the assistant messages' tokens (and
 * the template's end-of-turn after them) are scored. At most max_len tokens are kept.
 * Returns 0, or -1 with a message (no assistant message, nothing left to score after
 * truncation, a template that does not render turn by turn). */
int engine_train_encode_chat(const engine_model *m, const chat_message *msgs, size_t n,
                             int max_len, engine_train_example *out, char *err, size_t errsz);
/* prompt then completion (then end-of-sequence, when the vocabulary has one); the
 * completion's tokens are scored. Same returns. */
int engine_train_encode_completion(const engine_model *m, const char *prompt, const char *completion,
                                   int max_len, engine_train_example *out, char *err, size_t errsz);
void engine_train_example_free(engine_train_example *e);

/* ---- trainer ---------------------------------------------------------------------- */

typedef struct engine_train_options {
    int rank;             /* LoRA rank (8) */
    float alpha;          /* LoRA alpha (2 * rank); the update is scaled by alpha / rank */
    float dropout;        /* LoRA dropout (0) */
    bool mlp;             /* adapt the MLP's projections too (false) */
    int steps;            /* optimizer steps (100) */
    float lr;             /* peak learning rate (1e-3) */
    float min_lr_ratio;   /* the cosine ends at lr * this (0.1) */
    int warmup_steps;     /* linear warm-up (steps / 20) */
    float weight_decay;   /* AdamW's decoupled decay (0) */
    float grad_clip;      /* global gradient norm cap; 0 = none (1) */
    int grad_accum;       /* examples per step (4) */
    int seq_len;          /* longest sequence (256) */
    uint64_t seed;        /* initialization, data order, dropout (42) */
    int n_threads;        /* 0: online CPUs */
    int eval_every;       /* validation every N steps; 0 = only at the end (steps / 10) */
    int patience;         /* stop after N evaluations without improvement; 0 = never (0) */
    int checkpoint_every; /* steps; 0 = never (0) */
    const char *checkpoint_path;  /* where checkpoints go (written atomically) */
    int eval_generations; /* held-out examples generated for BLEU and ROUGE-L (16) */
} engine_train_options;

engine_train_options engine_train_default_options(void);

typedef struct engine_trainer engine_trainer;

/* A trainer of a fresh adapter (A random, B zero: the adapter starts as the base). The
 * examples are borrowed and must outlive the trainer; n_train >= 1, n_val >= 0. NULL
 * with a message on bad options or when out of memory. */
engine_trainer *engine_trainer_create(engine_model *m, const engine_train_options *opt,
                                      const engine_train_example *train, int n_train,
                                      const engine_train_example *val, int n_val, char *err, size_t errsz);
void engine_trainer_free(engine_trainer *t);

/* Restores the checkpoint at path (adapter, moments, step, data position, best loss).
 * Returns 1 when restored, 0 when there is no file, -1 with a message when it cannot be
 * used (corrupt, another rank or model). */
int engine_trainer_resume(engine_trainer *t, const char *path, char *err, size_t errsz);
/* Writes a checkpoint (to path.tmp, then renamed over path). Returns 0 or -1. */
int engine_trainer_checkpoint(engine_trainer *t, const char *path, char *err, size_t errsz);

typedef struct engine_train_step {
    int step;             /* steps done, this one included */
    double loss;          /* mean cross-entropy of this step's scored tokens */
    double lr, grad_norm; /* before clipping */
    int tokens;           /* tokens run through the model this step */
    double seconds;       /* wall clock */
    double cpu_seconds;   /* CPU time of the whole process, all threads (shared machines) */
} engine_train_step;

/* One optimizer step. Returns 0, or -1 with a message. */
int engine_trainer_step(engine_trainer *t, engine_train_step *info, char *err, size_t errsz);
int engine_trainer_steps_done(const engine_trainer *t);

/* Mean cross-entropy of the validation examples' scored tokens with the adapter as it
 * is (no dropout); *n_tokens (may be NULL) gets their count. NAN without examples. */
double engine_trainer_val_loss(engine_trainer *t, int *n_tokens);

/* Greedy generations for the first opt.eval_generations validation examples from their
 * prompt, with the adapter, scored against their reference completions. */
typedef struct engine_train_scores {
    double bleu, rouge_l;  /* in [0, 1] */
    int n;                 /* examples generated */
} engine_train_scores;
int engine_trainer_generation_scores(engine_trainer *t, engine_train_scores *out, char *err, size_t errsz);

/* The adapter being trained, usable in engine_gen_params.adapter while the trainer lives. */
const engine_adapter *engine_trainer_adapter(const engine_trainer *t);
int engine_trainer_save_adapter(const engine_trainer *t, const char *path, char *err, size_t errsz);

/* ---- the whole job ------------------------------------------------------------------ */

enum engine_train_event_kind {
    ENGINE_TRAIN_STEP,        /* after every step: step */
    ENGINE_TRAIN_EVAL,        /* val_loss, perplexity */
    ENGINE_TRAIN_CHECKPOINT,  /* a checkpoint was written */
    ENGINE_TRAIN_EARLY_STOP,  /* patience ran out */
};

typedef struct engine_train_event {
    enum engine_train_event_kind kind;
    engine_train_step step;
    double val_loss, perplexity;
} engine_train_event;

/* Return false to stop (a cancelled job); the trainer keeps its state. */
typedef bool (*engine_train_event_fn)(const engine_train_event *ev, void *user);

/* Runs steps until opt.steps are done, patience runs out or on_event says stop,
 * evaluating every eval_every steps and checkpointing every checkpoint_every steps (and
 * at the end). Returns 0, or -1 with a message. */
int engine_trainer_run(engine_trainer *t, engine_train_event_fn on_event, void *user, char *err, size_t errsz);

/* ---- text metrics (whitespace-separated words) -------------------------------------- */

/* Corpus BLEU-4 (geometric mean of clipped 1..4-gram precisions, add-one smoothing for
 * n > 1, brevity penalty) of hyps against refs, one reference each; in [0, 1]. */
double engine_bleu(const char *const *hyps, const char *const *refs, int n);
/* Mean ROUGE-L F1 (longest common subsequence of words); in [0, 1]. */
double engine_rouge_l(const char *const *hyps, const char *const *refs, int n);

#endif
