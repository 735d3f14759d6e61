/* request_map.c - GenerateRequest -> engine_gen_params and prompt ids (see
 * request_map.h). */
#include "request_map.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A float parameter must be finite and within [lo, hi]. */
static int check_range(const char *name, float v, float lo, float hi, char *err, size_t errsz)
{
    if (isfinite(v) && v >= lo && v <= hi)
        return 0;
    snprintf(err, errsz, "%s must be between %g and %g", name, (double)lo, (double)hi);
    return -1;
}

static int map_sampling(const Citadel__GenerateRequest *req, sampler_params *sp, char *err, size_t errsz)
{
    if (check_range("temperature", req->temperature, 0, 100, err, errsz) ||
        check_range("top_p", req->top_p, 0, 1, err, errsz) ||
        check_range("min_p", req->min_p, 0, 1, err, errsz) ||
        check_range("presence_penalty", req->presence_penalty, -2, 2, err, errsz) ||
        check_range("frequency_penalty", req->frequency_penalty, -2, 2, err, errsz) ||
        check_range("repetition_penalty", req->repetition_penalty, 0, 10, err, errsz))
        return -1;
    if (req->top_k < 0) {
        snprintf(err, errsz, "top_k must not be negative");
        return -1;
    }
    sp->temperature = req->temperature;
    sp->top_k = req->top_k;                                   /* 0: off */
    sp->top_p = req->top_p > 0 ? req->top_p : 1.0f;            /* 0: unset, off */
    sp->min_p = req->min_p;                                   /* 0: off */
    sp->repeat_penalty = req->repetition_penalty > 0 ? req->repetition_penalty : 1.0f;
    sp->presence_penalty = req->presence_penalty;
    sp->frequency_penalty = req->frequency_penalty;
    return 0;
}

static int map_logprobs(const Citadel__GenerateRequest *req, sampler_params *sp, char *err, size_t errsz)
{
    if (req->top_logprobs < 0 || req->top_logprobs > SAMPLE_MAX_TOP) {
        snprintf(err, errsz, "top_logprobs must be between 0 and %d", SAMPLE_MAX_TOP);
        return -1;
    }
    sp->n_top_logprobs = req->logprobs ? req->top_logprobs : 0;
    return 0;
}

/* Stop strings point into the request, which outlives the generation. */
static int map_stops(const Citadel__GenerateRequest *req, engine_gen_params *out, char *err, size_t errsz)
{
    int k = 0;
    for (size_t i = 0; i < req->n_stop; i++) {
        if (req->stop[i] == NULL || req->stop[i][0] == '\0')
            continue;
        if (k == ENGINE_MAX_STOP - 1) {
            snprintf(err, errsz, "at most %d stop strings", ENGINE_MAX_STOP - 1);
            return -1;
        }
        out->stop[k++] = req->stop[i];
    }
    out->stop[k] = NULL;
    return 0;
}

int request_gen_params(const Citadel__GenerateRequest *req, uint64_t seed_if_unset,
                       engine_gen_params *out, char *err, size_t errsz)
{
    *out = engine_default_gen_params();
    if (map_sampling(req, &out->sampling, err, errsz) || map_logprobs(req, &out->sampling, err, errsz) ||
        map_stops(req, out, err, errsz))
        return -1;
    if (req->max_tokens < 0) {
        snprintf(err, errsz, "max_tokens must not be negative");
        return -1;
    }
    out->max_tokens = req->max_tokens > 0 ? req->max_tokens : REQUEST_DEFAULT_MAX_TOKENS;
    /* has_seed tells a client's seed 0 from no seed; a non-zero seed from a sender that
     * predates has_seed still counts. */
    out->sampling.seed = (req->has_seed || req->seed) ? req->seed : seed_if_unset;
    return 0;
}

/* Renders the messages with the model's chat template; NULL with err on failure. */
static char *render_messages(const engine_model *m, const Citadel__GenerateRequest *req, char *err, size_t errsz)
{
    chat_message *msgs = calloc(req->n_messages, sizeof *msgs);
    if (msgs == NULL) {
        snprintf(err, errsz, "out of memory");
        return NULL;
    }
    for (size_t i = 0; i < req->n_messages; i++) {
        const Citadel__ChatMessage *cm = req->messages[i];
        if (cm == NULL || cm->role == NULL || cm->role[0] == '\0') {
            snprintf(err, errsz, "message %zu has no role", i);
            free(msgs);
            return NULL;
        }
        msgs[i] = (chat_message){cm->role, cm->content ? cm->content : ""};
    }
    char *text = engine_render_chat(m, msgs, req->n_messages, true);
    free(msgs);
    if (text == NULL)
        snprintf(err, errsz, "cannot render the chat messages");
    return text;
}

static int32_t *tokenize(const engine_model *m, const char *text, bool parse_special, int *n, char *err,
                         size_t errsz)
{
    size_t len = strlen(text);
    if (len > (1u << 26)) {
        snprintf(err, errsz, "prompt too long");
        return NULL;
    }
    int cap = (int)len + 8;   /* a token covers at least one byte, plus BOS */
    int32_t *ids = malloc(sizeof *ids * (size_t)cap);
    int count = ids ? engine_tokenize(m, text, len, engine_adds_bos(m), parse_special, ids, cap) : -1;
    if (count < 0 || count > cap) {
        snprintf(err, errsz, "cannot tokenize the prompt");
        free(ids);
        return NULL;
    }
    *n = count;
    return ids;
}

int32_t *request_prompt_ids(const engine_model *m, const Citadel__GenerateRequest *req, int *n,
                            char *err, size_t errsz)
{
    if (req->n_messages > 0) {
        char *text = render_messages(m, req, err, errsz);
        if (text == NULL)
            return NULL;
        int32_t *ids = tokenize(m, text, true, n, err, errsz);
        free(text);
        return ids;
    }
    if (req->prompt && req->prompt[0]) {
        /* A raw prompt is the client's text: control-token texts in it stay text. */
        return tokenize(m, req->prompt, false, n, err, errsz);
    }
    snprintf(err, errsz, "the request has neither messages nor a prompt");
    return NULL;
}
