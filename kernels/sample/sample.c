/* sample.c - choosing the next token from the logits (see sample.h for the pipeline).
 *
 * The worker and the CLI call sampler_sample once per generated token with the V logits
 * of the last position (V is about 150k for the large vocabularies), so the cost that
 * matters is a few linear passes over V and nothing worse:
 *   - top-k keeps the k best in a min-heap of size k: O(V log k), no full sort;
 *   - top-p without top-k first drops the tokens that provably lie outside the nucleus
 *     (one linear pass), heapifies the rest and pops only until the nucleus is complete;
 *   - min-p is a threshold on the logit and needs no order at all.
 * Every scratch buffer is allocated once in sampler_create; sampling never allocates.
 *
 * Numerics: logits may hold -inf (masked tokens), +inf, NaN or huge values. They are
 * made finite-or--inf once (NaN -> -inf, +inf -> FLT_MAX) and every exponential is
 * taken of (logit - max) <= 0, so no step overflows or produces NaN. Sums are in double.
 *
 * The RNG is the sampler's own xoshiro256** seeded through splitmix64, so a seed gives
 * the same tokens on every platform and libc.
 */
#include "sample/sample.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* A candidate token: its (penalised) logit and id. */
typedef struct cand {
    float logit;
    int32_t id;
} cand;

struct sampler {
    sampler_params p;
    int n_vocab;
    uint64_t rng[4];      /* xoshiro256** state */
    cand *cands;          /* (V) the candidate set of one call */
    cand *sorted;         /* (V) nucleus popped from the heap, best first */
    int32_t *counts;      /* (V) occurrences in the penalty window; all zero between calls */
    int32_t *distinct;    /* (V) the distinct tokens of the penalty window */
};

/* ---- RNG: splitmix64 to seed, xoshiro256** to draw ------------------------------------ */

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t rng_next(uint64_t s[4])
{
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

/* Uniform in [0, 1) with 53 random bits. */
static double rng_uniform(uint64_t s[4]) { return (double)(rng_next(s) >> 11) * 0x1.0p-53; }

static void rng_seed(uint64_t s[4], uint64_t seed)
{
    for (int i = 0; i < 4; i++)
        s[i] = splitmix64(&seed);  /* never all zero: splitmix64 is a bijection of a counter */
}

/* ---- lifecycle ------------------------------------------------------------------------ */

sampler_params sampler_default_params(void)
{
    return (sampler_params){
        .temperature = 0.8f,
        .top_k = 40,
        .top_p = 0.95f,
        .min_p = 0.05f,
        .repeat_penalty = 1.0f,
        .repeat_last_n = 64,
        .presence_penalty = 0.0f,
        .frequency_penalty = 0.0f,
        .seed = 0,
        .n_top_logprobs = 0,
    };
}

/* Copies params; n_top_logprobs is clamped to 0..SAMPLE_MAX_TOP. Returns NULL when
 * n_vocab <= 0 or params is NULL or on allocation failure. */
sampler *sampler_create(const sampler_params *params, int n_vocab)
{
    if (params == NULL || n_vocab <= 0)
        return NULL;
    sampler *s = calloc(1, sizeof *s);
    if (s == NULL)
        return NULL;
    s->p = *params;
    if (s->p.n_top_logprobs < 0)
        s->p.n_top_logprobs = 0;
    if (s->p.n_top_logprobs > SAMPLE_MAX_TOP)
        s->p.n_top_logprobs = SAMPLE_MAX_TOP;
    s->n_vocab = n_vocab;
    rng_seed(s->rng, s->p.seed);
    size_t V = (size_t)n_vocab;
    s->cands = malloc(V * sizeof *s->cands);
    s->sorted = malloc(V * sizeof *s->sorted);
    s->counts = calloc(V, sizeof *s->counts);
    s->distinct = malloc(V * sizeof *s->distinct);
    if (!s->cands || !s->sorted || !s->counts || !s->distinct) {
        sampler_free(s);
        return NULL;
    }
    return s;
}

/* Frees s and its buffers; NULL is a no-op. */
void sampler_free(sampler *s)
{
    if (s == NULL)
        return;
    free(s->cands);
    free(s->sorted);
    free(s->counts);
    free(s->distinct);
    free(s);
}

/* ---- penalties ------------------------------------------------------------------------ */

/* Applies the repetition, presence and frequency penalties to logits (V) for the tokens
 * of the last repeat_last_n entries of history (repeat_last_n < 0: all of it; 0: none).
 * Each distinct token is penalised once, whatever its count, except by the frequency
 * penalty, which is multiplied by the count. Ids outside the vocabulary are ignored. */
static void apply_penalties(sampler *s, float *logits, const int32_t *history, int n_history)
{
    const sampler_params *p = &s->p;
    bool any = p->repeat_penalty != 1.0f || p->presence_penalty != 0.0f || p->frequency_penalty != 0.0f;
    if (!any || history == NULL || n_history <= 0 || p->repeat_last_n == 0)
        return;
    int n = p->repeat_last_n < 0 || p->repeat_last_n > n_history ? n_history : p->repeat_last_n;
    int n_distinct = 0;
    for (int i = n_history - n; i < n_history; i++) {
        int32_t t = history[i];
        if (t < 0 || t >= s->n_vocab)
            continue;
        if (s->counts[t]++ == 0)
            s->distinct[n_distinct++] = t;
    }
    for (int i = 0; i < n_distinct; i++) {
        int32_t t = s->distinct[i];
        float l = logits[t];
        if (p->repeat_penalty != 1.0f && p->repeat_penalty > 0.0f)
            l = l > 0.0f ? l / p->repeat_penalty : l * p->repeat_penalty;
        l -= (float)s->counts[t] * p->frequency_penalty + p->presence_penalty;
        logits[t] = l;
        s->counts[t] = 0;  /* leave the counts zero for the next call */
    }
}

/* NaN -> -inf, +inf -> FLT_MAX, so that logit - max is never inf - inf. Returns the
 * largest logit; when every logit is -inf they are all set to 0 (a uniform choice is the
 * only sensible answer) and 0 is returned. */
static float sanitize_logits(float *logits, int n)
{
    float max = -INFINITY;
    for (int i = 0; i < n; i++) {
        float l = logits[i];
        if (isnan(l))
            l = -INFINITY;
        else if (l > FLT_MAX)
            l = FLT_MAX;
        logits[i] = l;
        if (l > max)
            max = l;
    }
    if (max == -INFINITY) {
        for (int i = 0; i < n; i++)
            logits[i] = 0.0f;
        max = 0.0f;
    }
    return max;
}

/* exp(x) for x <= 0, the only exponentials sampling needs (every one is of logit - max).
 * Written so that the loops over V vectorize: x = n ln2 + r with |r| <= ln2/2, e^r by
 * its Taylor polynomial to degree 6 (relative error about 1e-7, as good as expf for
 * probabilities), 2^n written into the exponent bits. The clamps are integer selects on
 * the bit patterns because float selects are not vectorized under -ftrapping-math:
 * x below -100 (and -inf) becomes -100, whose 2^n is clamped to 2^-127 -> bits 0 -> an
 * exact 0, so masked tokens get no weight at all; +0 stays 0 -> 1. */
static inline float exp_neg(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    u = u > 0xC2C80000u ? 0xC2C80000u : u;  /* more negative than -100.0f */
    u = u < 0x80000000u ? 0u : u;           /* positive (only +0 occurs) */
    memcpy(&x, &u, sizeof x);
    const float magic = 12582912.0f;  /* 1.5 * 2^23: adding it rounds to an integer */
    float n = (x * 1.44269504f + magic) - magic;
    float r = x - n * 0.693145752f - n * 1.42860677e-06f;  /* ln2 split in two for accuracy */
    float p = 1.0f + r * (1.0f + r * (0.5f + r * (1.0f / 6 + r * (1.0f / 24 + r * (1.0f / 120 + r * (1.0f / 720))))));
    int32_t e = (int32_t)n;
    e = e < -127 ? -127 : e;
    uint32_t bits = (uint32_t)(e + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

/* sum_i exp(logits[i] - max) given their max: the softmax denominator scaled by
 * exp(-max) so that nothing overflows; it is >= 1 (the max contributes exp(0)). This is
 * the one pass over V that every call makes, so it is shaped for the vectorizer: the
 * exponentials of a block in one loop, then eight independent float partial sums (each
 * over at most 32 values <= 1, so float is exact enough), folded into a double. */
static double sum_exp(const float *logits, int n, float max)
{
    enum { BLOCK = 256, LANES = 8 };
    float e[BLOCK];
    double sum = 0.0;
    for (int start = 0; start < n; start += BLOCK) {
        int m = n - start < BLOCK ? n - start : BLOCK;
        for (int i = 0; i < m; i++)
            e[i] = exp_neg(logits[start + i] - max);
        for (int i = m; i < BLOCK; i++)
            e[i] = 0.0f;
        float part[LANES] = {0};
        for (int i = 0; i < BLOCK; i += LANES)
            for (int j = 0; j < LANES; j++)
                part[j] += e[i + j];
        for (int j = 0; j < LANES; j++)
            sum += (double)part[j];
    }
    return sum;
}

/* ---- selection ------------------------------------------------------------------------ */

/* The order of candidates: higher logit first, ties to the lower id, so that every
 * selection is deterministic and greedy/top-k=1 agree. */
static bool better(cand a, cand b) { return a.logit > b.logit || (a.logit == b.logit && a.id < b.id); }

/* Restores the heap property below node i of h[0..n). A max-heap (root = best) when
 * best_on_top, otherwise a min-heap (root = worst). */
static void sift_down(cand *h, int n, int i, bool best_on_top)
{
    cand x = h[i];
    for (;;) {
        int c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && (best_on_top ? better(h[c + 1], h[c]) : better(h[c], h[c + 1])))
            c++;
        if (!(best_on_top ? better(h[c], x) : better(x, h[c])))
            break;
        h[i] = h[c];
        i = c;
    }
    h[i] = x;
}

/* Writes the k best of logits (n) into out, best first, and returns how many (min(k, n)).
 * A min-heap of the best seen so far: most logits lose one comparison against its root,
 * which is why this is close to a single pass for small k. */
static int select_top(const float *logits, int n, cand *out, int k)
{
    if (k > n)
        k = n;
    if (k <= 0)
        return 0;
    for (int i = 0; i < k; i++)
        out[i] = (cand){logits[i], i};
    for (int i = k / 2 - 1; i >= 0; i--)
        sift_down(out, k, i, false);
    for (int i = k; i < n; i++) {
        cand c = {logits[i], i};
        if (better(c, out[0])) {
            out[0] = c;
            sift_down(out, k, 0, false);
        }
    }
    /* Heap sort: moving the worst to the end each time leaves the best first. */
    for (int m = k - 1; m > 0; m--) {
        cand t = out[0];
        out[0] = out[m];
        out[m] = t;
        sift_down(out, m, 0, false);
    }
    return k;
}

/* Argmax of logits (n >= 1), ties to the lowest id. */
static int32_t argmax(const float *logits, int n)
{
    int32_t best = 0;
    for (int i = 1; i < n; i++)
        if (logits[i] > logits[best])
            best = i;
    return best;
}

/* ---- truncation ----------------------------------------------------------------------- */

/* Top-p over candidates already sorted best first: keeps the shortest prefix whose
 * probability (renormalised over c, at temperature 1) reaches top_p; at least one. */
static int top_p_sorted(const cand *c, int n, float top_p)
{
    double total = 0.0;
    for (int i = 0; i < n; i++)
        total += (double)exp_neg(c[i].logit - c[0].logit);
    double target = (double)top_p * total, cum = 0.0;
    for (int i = 0; i < n; i++) {
        cum += (double)exp_neg(c[i].logit - c[0].logit);
        if (cum >= target)
            return i + 1;
    }
    return n;
}

/* Top-p over all V logits without a full sort. The tokens below a cutoff L whose joint
 * mass is certainly under (1 - top_p) can never be in the nucleus, because the tokens
 * above L already hold more than top_p; only the rest is heapified and popped in order
 * until the nucleus is complete. total is sum_exp(logits, V, max). Writes the nucleus,
 * best first, to s->sorted and returns its size. */
static int top_p_unsorted(sampler *s, const float *logits, float max, double total, float top_p)
{
    int V = s->n_vocab;
    /* V * exp(L - max) <= (1 - top_p) * total / 2 bounds the mass below L with margin. */
    double cut = log((1.0 - (double)top_p) * total / (2.0 * V));
    float cutoff = isfinite(cut) ? max + (float)cut : -INFINITY;
    int n = 0;
    for (int i = 0; i < V; i++)
        if (logits[i] >= cutoff)
            s->cands[n++] = (cand){logits[i], i};
    for (int i = n / 2 - 1; i >= 0; i--)
        sift_down(s->cands, n, i, true);
    double target = (double)top_p * total, cum = 0.0;
    int m = 0;
    while (n > 0) {
        cand best = s->cands[0];
        s->sorted[m++] = best;
        s->cands[0] = s->cands[--n];
        sift_down(s->cands, n, 0, true);
        cum += (double)exp_neg(best.logit - max);
        if (cum >= target)
            break;
    }
    return m;
}

/* Keeps, in order, the candidates whose probability is at least min_p times the best
 * one's, i.e. logit >= max + log(min_p). The best always survives. Returns the count. */
static int min_p_filter(cand *c, int n, float max, float min_p)
{
    float threshold = max + logf(min_p);
    int m = 0;
    for (int i = 0; i < n; i++)
        if (c[i].logit >= threshold)
            c[m++] = c[i];
    return m;
}

/* Draws one candidate with probability softmax(logit / temperature) over c (n >= 1). */
static int32_t draw(sampler *s, const cand *c, int n, float max, float temperature)
{
    double total = 0.0;
    for (int i = 0; i < n; i++)
        total += (double)exp_neg((c[i].logit - max) / temperature);
    double u = rng_uniform(s->rng) * total, cum = 0.0;
    int32_t last = c[0].id;
    for (int i = 0; i < n; i++) {
        double w = (double)exp_neg((c[i].logit - max) / temperature);
        cum += w;
        if (w > 0.0)
            last = c[i].id;
        if (u < cum)
            return c[i].id;
    }
    return last;  /* rounding left u just past the sum: the last token that had weight */
}

/* Top-k, top-p and min-p, then the draw at the sampler's temperature (> 0). total is
 * sum_exp(logits, V, max). */
static int32_t sample_truncated(sampler *s, const float *logits, float max, double total)
{
    const sampler_params *p = &s->p;
    int V = s->n_vocab;
    bool top_p_on = p->top_p > 0.0f && p->top_p < 1.0f;
    cand *c = s->cands;
    int n;
    if (p->top_k > 0 && p->top_k < V) {
        n = select_top(logits, V, c, p->top_k);
        if (top_p_on)
            n = top_p_sorted(c, n, p->top_p);
    } else if (top_p_on) {
        n = top_p_unsorted(s, logits, max, total, p->top_p);
        c = s->sorted;
    } else {
        for (int i = 0; i < V; i++)
            c[i] = (cand){logits[i], i};
        n = V;
    }
    if (p->min_p > 0.0f)
        n = min_p_filter(c, n, max, p->min_p);
    return draw(s, c, n, max, p->temperature);
}

/* ---- the entry point ------------------------------------------------------------------ */

/* Picks the next token from logits (V), which it overwrites with the penalised logits.
 * The result's logprob is always that of the chosen token in log_softmax(penalised
 * logits); top_ids/top_logprobs hold the n_top_logprobs best tokens of that distribution,
 * best first (ties to the lower id). Can't fail; s must come from sampler_create. */
sample_result sampler_sample(sampler *s, float *logits, const int32_t *history, int n_history)
{
    sample_result r;
    memset(&r, 0, sizeof r);
    int V = s->n_vocab;
    apply_penalties(s, logits, history, n_history);
    float max = sanitize_logits(logits, V);
    double total = sum_exp(logits, V, max);
    double log_z = (double)max + log(total);
    if (s->p.temperature <= 0.0f)
        r.id = argmax(logits, V);
    else
        r.id = sample_truncated(s, logits, max, total);
    r.logprob = (float)((double)logits[r.id] - log_z);
    if (s->p.n_top_logprobs > 0) {
        cand top[SAMPLE_MAX_TOP];
        r.n_top = select_top(logits, V, top, s->p.n_top_logprobs);
        for (int i = 0; i < r.n_top; i++) {
            r.top_ids[i] = top[i].id;
            r.top_logprobs[i] = (float)((double)top[i].logit - log_z);
        }
    }
    return r;
}
