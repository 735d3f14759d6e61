/* sample.h - choosing the next token from the logits.
 *
 * The pipeline, in order (each step skipped at its neutral value):
 *   repetition penalty (llama.cpp style: divide positive logits, multiply negative)
 *   presence and frequency penalties (OpenAI style) over the last repeat_last_n tokens
 *   temperature <= 0 -> greedy (argmax, ties to the lowest id)
 *   top-k, top-p (nucleus), min-p (relative to the top probability)
 *   temperature, softmax, draw with the sampler's own RNG (seeded: same seed, same draws)
 * Log-probabilities are those of the model's distribution after penalties and before
 * truncation and temperature (what OpenAI's logprobs report).
 */
#ifndef CITADEL_SAMPLE_H
#define CITADEL_SAMPLE_H

#include <stdbool.h>
#include <stdint.h>

typedef struct sampler_params {
    float temperature;        /* 0 -> greedy. default 0.8 */
    int top_k;                /* <= 0 -> off. default 40 */
    float top_p;              /* 1 -> off. default 0.95 */
    float min_p;              /* 0 -> off. default 0.05 */
    float repeat_penalty;     /* 1 -> off. default 1.0 */
    int repeat_last_n;        /* window for the penalties; default 64 */
    float presence_penalty;   /* 0 -> off */
    float frequency_penalty;  /* 0 -> off */
    uint64_t seed;            /* RNG seed */
    int n_top_logprobs;       /* how many alternatives to report (0..SAMPLE_MAX_TOP) */
} sampler_params;

#define SAMPLE_MAX_TOP 20

/* The chosen token and, when asked, its log-probability and the best alternatives. */
typedef struct sample_result {
    int32_t id;
    float logprob;
    int n_top;
    int32_t top_ids[SAMPLE_MAX_TOP];
    float top_logprobs[SAMPLE_MAX_TOP];
} sample_result;

typedef struct sampler sampler;

sampler_params sampler_default_params(void);
/* NULL on allocation failure, n_vocab <= 0 or params NULL. params are copied; the RNG
 * starts from params->seed. */
sampler *sampler_create(const sampler_params *params, int n_vocab);
void sampler_free(sampler *s);

/* Picks the next token. logits (n_vocab) are used as scratch and changed: on return they
 * hold the penalised logits (NaN made -inf, +inf made FLT_MAX). history is every token
 * of the sequence so far (prompt and generated) for the penalties; repeat_last_n < 0
 * means all of it, 0 no penalties. The result's logprob is always filled; top_ids and
 * top_logprobs hold the n_top_logprobs most likely tokens, best first, ties to the lower
 * id. Can't fail. */
sample_result sampler_sample(sampler *s, float *logits, const int32_t *history, int n_history);

#endif
