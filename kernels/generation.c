/* generation.c - sampling, streaming text and stop conditions of one generation, one
 * token per step (see generation.h).
 */
#include "generation.h"

#include <stdlib.h>
#include <string.h>

static int text_append(text_stream *ts, const char *bytes, size_t n)
{
    if (ts->len + n + 1 > ts->cap) {
        size_t cap = (ts->cap ? ts->cap * 2 : 256) + n;
        char *buf = realloc(ts->buf, cap);
        if (buf == NULL)
            return -1;
        ts->buf = buf;
        ts->cap = cap;
    }
    memcpy(ts->buf + ts->len, bytes, n);
    ts->len += n;
    ts->buf[ts->len] = '\0';
    return 0;
}

/* Where the first stop string starts (searching only text added since `from`), or -1. */
static long find_stop(const text_stream *ts, size_t added)
{
    long best = -1;
    for (int i = 0; i < ENGINE_MAX_STOP && ts->stop[i]; i++) {
        size_t sl = strlen(ts->stop[i]);
        if (sl == 0) continue;
        size_t start = ts->len - added >= sl ? ts->len - added - sl + 1 : 0;
        char *hit = memmem(ts->buf + start, ts->len - start, ts->stop[i], sl);
        if (hit && (best < 0 || hit - ts->buf < best))
            best = hit - ts->buf;
    }
    return best;
}

/* Bytes at the end of the text that are a proper prefix of some stop string. */
static size_t stop_prefix_held(const text_stream *ts)
{
    size_t held = 0;
    for (int i = 0; i < ENGINE_MAX_STOP && ts->stop[i]; i++) {
        size_t sl = strlen(ts->stop[i]);
        for (size_t k = sl > 0 ? sl - 1 : 0; k > held; k--)
            if (k <= ts->len && !memcmp(ts->buf + ts->len - k, ts->stop[i], k)) {
                held = k;
                break;
            }
    }
    return held;
}

/* Sends text[emitted..upto) to the callback with the token that produced it. */
static bool emit(text_stream *ts, size_t upto, int32_t id, const sample_result *sr,
                 engine_token_fn on_token, void *user)
{
    engine_token_event ev = {id, ts->buf ? ts->buf + ts->emitted : "", (int)(upto - ts->emitted), sr};
    ts->emitted = upto;
    return on_token ? on_token(&ev, user) : true;
}

int generation_begin(generation *g, const tokenizer *tok, int n_vocab, const engine_gen_params *params,
                     int n_ctx, engine_token_fn on_token, void *user)
{
    memset(g, 0, sizeof *g);
    g->tok = tok;
    g->ignore_eos = params->ignore_eos;
    g->on_token = on_token;
    g->user = user;
    g->max_new = params->max_tokens > 0 && params->max_tokens < n_ctx ? params->max_tokens : n_ctx;
    g->smp = sampler_create(&params->sampling, n_vocab);
    g->r.ids = malloc(sizeof(int32_t) * (size_t)g->max_new);
    bool ok = g->smp && g->r.ids;
    for (int i = 0; ok && i < ENGINE_MAX_STOP && params->stop[i]; i++)
        ok = (g->ts.stop[i] = strdup(params->stop[i])) != NULL;
    g->r.finish = ENGINE_FINISH_LENGTH;
    if (!ok) {
        generation_abort(g);
        return -1;
    }
    return 0;
}

bool generation_step(generation *g, float *logits, const int32_t *history, int n_past, int n_ctx,
                     int32_t *next)
{
    engine_gen_result *r = &g->r;
    text_stream *ts = &g->ts;
    char piece[256];
    sample_result sr = sampler_sample(g->smp, logits, history, n_past);
    if (!g->ignore_eos && tokenizer_is_eog(g->tok, sr.id)) {
        r->finish = ENGINE_FINISH_STOP;
        return false;
    }
    r->ids[r->n_generated++] = sr.id;
    int n = detok_stream_push(&g->ds, g->tok, sr.id, piece, sizeof piece);
    size_t before = ts->len;
    if (text_append(ts, piece, (size_t)n)) {
        r->finish = ENGINE_FINISH_CANCELLED;
        return false;
    }
    long stop_at = find_stop(ts, ts->len - before);
    if (stop_at >= 0) {
        ts->len = (size_t)stop_at;
        emit(ts, ts->len, sr.id, &sr, g->on_token, g->user);
        r->finish = ENGINE_FINISH_STOP;
        return false;
    }
    if (!emit(ts, ts->len - stop_prefix_held(ts), sr.id, &sr, g->on_token, g->user)) {
        r->finish = ENGINE_FINISH_CANCELLED;
        return false;
    }
    if (r->n_generated >= g->max_new || n_past + 1 >= n_ctx)
        return false;
    *next = sr.id;
    return true;
}

void generation_end(generation *g, engine_gen_result *out)
{
    text_stream *ts = &g->ts;
    engine_gen_result *r = &g->r;
    if (r->finish != ENGINE_FINISH_STOP || ts->emitted < ts->len) {
        char piece[16];
        int n = detok_stream_flush(&g->ds, piece, sizeof piece);
        text_append(ts, piece, (size_t)n);
        if (ts->emitted < ts->len && r->finish != ENGINE_FINISH_CANCELLED)
            emit(ts, ts->len, -1, NULL, g->on_token, g->user);  /* held-back text: no new token */
    }
    *out = *r;
    out->text = ts->buf ? ts->buf : calloc(1, 1);
    out->text_len = ts->len;
    ts->buf = NULL;
    r->ids = NULL;
    generation_abort(g);
}

void generation_abort(generation *g)
{
    sampler_free(g->smp);
    free(g->r.ids);
    free(g->ts.buf);
    for (int i = 0; i < ENGINE_MAX_STOP; i++)
        free(g->ts.stop[i]);
    memset(g, 0, sizeof *g);
}
