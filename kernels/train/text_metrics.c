/* text_metrics.c - BLEU and ROUGE-L of generated against reference texts, for the
 * trainer's held-out evaluation (engine_bleu, engine_rouge_l in engine_train.h).
 * Texts are compared as sequences of whitespace-separated words.
 */
#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine_train.h"

typedef struct word {
    const char *p;
    int len;
} word;

/* The words of s (pointers into s); *n gets their count. NULL when out of memory. */
static word *split_words(const char *s, int *n)
{
    int cap = 16;
    word *w = malloc(sizeof *w * (size_t)cap);
    *n = 0;
    while (w && *s) {
        while (*s && isspace((unsigned char)*s)) s++;
        if (!*s) break;
        const char *start = s;
        while (*s && !isspace((unsigned char)*s)) s++;
        if (*n == cap) {
            word *bigger = realloc(w, sizeof *w * (size_t)(cap *= 2));
            if (bigger == NULL) { free(w); return NULL; }
            w = bigger;
        }
        w[(*n)++] = (word){start, (int)(s - start)};
    }
    return w;
}

static bool same_gram(const word *a, const word *b, int len)
{
    for (int i = 0; i < len; i++)
        if (a[i].len != b[i].len || memcmp(a[i].p, b[i].p, (size_t)a[i].len) != 0)
            return false;
    return true;
}

/* Clipped matches of the hypothesis's g-grams in the reference: each hypothesis g-gram
 * counts at most as often as it occurs in the reference. Quadratic, which is fine for
 * the short completions of an evaluation. */
static int clipped_matches(const word *h, int nh, const word *r, int nr, int g)
{
    int matches = 0;
    for (int i = 0; i + g <= nh; i++) {
        int seen_before = 0, in_hyp = 0, in_ref = 0;
        for (int j = 0; j < i; j++)
            seen_before += same_gram(h + j, h + i, g);
        if (seen_before)
            continue;  /* counted with its first occurrence */
        for (int j = i; j + g <= nh; j++)
            in_hyp += same_gram(h + j, h + i, g);
        for (int j = 0; j + g <= nr; j++)
            in_ref += same_gram(r + j, h + i, g);
        matches += in_hyp < in_ref ? in_hyp : in_ref;
    }
    return matches;
}

double engine_bleu(const char *const *hyps, const char *const *refs, int n)
{
    double matches[5] = {0}, totals[5] = {0}, hyp_len = 0, ref_len = 0;
    for (int k = 0; k < n; k++) {
        int nh, nr;
        word *h = split_words(hyps[k], &nh), *r = split_words(refs[k], &nr);
        if (h && r)
            for (int g = 1; g <= 4; g++) {
                matches[g] += clipped_matches(h, nh, r, nr, g);
                totals[g] += nh >= g ? nh - g + 1 : 0;
            }
        hyp_len += h ? nh : 0;
        ref_len += r ? nr : 0;
        free(h);
        free(r);
    }
    if (hyp_len == 0 || matches[1] == 0)
        return 0.0;
    double log_sum = 0.0;
    for (int g = 1; g <= 4; g++) {
        double p = g == 1 ? matches[1] / totals[1] : (matches[g] + 1) / (totals[g] + 1);
        log_sum += log(p) / 4;
    }
    double brevity = hyp_len >= ref_len ? 1.0 : exp(1.0 - ref_len / hyp_len);
    return brevity * exp(log_sum);
}

/* Length of the longest common subsequence of words (two rows of the table). */
static int lcs_words(const word *a, int na, const word *b, int nb)
{
    int *prev = calloc((size_t)nb + 1, sizeof(int)), *cur = calloc((size_t)nb + 1, sizeof(int));
    int best = 0;
    if (prev && cur) {
        for (int i = 1; i <= na; i++) {
            for (int j = 1; j <= nb; j++)
                cur[j] = same_gram(a + i - 1, b + j - 1, 1) ? prev[j - 1] + 1
                         : prev[j] > cur[j - 1] ? prev[j] : cur[j - 1];
            int *tmp = prev;
            prev = cur;
            cur = tmp;
        }
        best = prev[nb];
    }
    free(prev);
    free(cur);
    return best;
}

double engine_rouge_l(const char *const *hyps, const char *const *refs, int n)
{
    double sum = 0.0;
    for (int k = 0; k < n; k++) {
        int nh, nr;
        word *h = split_words(hyps[k], &nh), *r = split_words(refs[k], &nr);
        if (h && r && nh > 0 && nr > 0) {
            double lcs = lcs_words(h, nh, r, nr);
            double prec = lcs / nh, rec = lcs / nr;
            sum += prec + rec > 0 ? 2 * prec * rec / (prec + rec) : 0.0;
        }
        free(h);
        free(r);
    }
    return n > 0 ? sum / n : 0.0;
}
