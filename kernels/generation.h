/* generation.h - one generation's sampling, detokenization and stop conditions, as a
 * step function: internal to kernels/, shared by engine_generate (one session, a loop)
 * and engine_batch (many sequences, one step each per pass over the weights).
 *
 * The caller owns the forward pass: it hands generation_step the logits after the
 * last token and, while the step says so, feeds back the token it returns.
 */
#ifndef CITADEL_GENERATION_H
#define CITADEL_GENERATION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine.h"
#include "tokenizer/tokenizer.h"

/* Generated text with stop strings: text is released to the callback only up to the
 * point where no stop string could still begin, so a stop string split over several
 * tokens is never shown. */
typedef struct text_stream {
    char *buf;
    size_t len, cap, emitted;
    char *stop[ENGINE_MAX_STOP + 1];   /* copies, NULL-terminated */
} text_stream;

typedef struct generation {
    const tokenizer *tok;
    sampler *smp;
    bool ignore_eos;
    int max_new;
    text_stream ts;
    detok_stream ds;
    engine_token_fn on_token;
    void *user;
    engine_gen_result r;   /* ids and finish so far */
} generation;

/* Sets up a generation of at most params->max_tokens tokens (or until the context,
 * n_ctx, is full). Returns 0, or -1 when out of memory. */
int generation_begin(generation *g, const tokenizer *tok, int n_vocab, const engine_gen_params *params,
                     int n_ctx, engine_token_fn on_token, void *user);

/* Samples the next token from logits (history: the n_past tokens before, for the
 * penalties), streams its text, and checks the stop conditions. Returns true with
 * *next set when the generation goes on (run *next, then step again), false when it
 * has finished (g->r.finish says why). */
bool generation_step(generation *g, float *logits, const int32_t *history, int n_past, int n_ctx,
                     int32_t *next);

/* Flushes held-back text, moves the result to *out (free it with
 * engine_gen_result_free) and releases the rest. */
void generation_end(generation *g, engine_gen_result *out);

/* Releases everything without a result. */
void generation_abort(generation *g);

#endif
