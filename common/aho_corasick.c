/* aho_corasick.c - the blocked-term automaton (see aho_corasick.h).
 *
 * Built in three steps: (1) bytes are mapped to classes (bytes that occur in no term
 * share class 0; A-Z share their lower-case letter's class), so that a table row is
 * n_classes wide instead of 256; (2) the terms are inserted into a trie stored in that
 * dense table; (3) a breadth-first pass fills every missing transition from the
 * failure link, turning the trie into a DFA. Scanning is then one lookup a byte.
 */
#include "aho_corasick.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct ac_automaton {
    uint8_t cls[256];       /* byte -> class */
    uint32_t n_classes;
    uint32_t n_states;
    uint32_t *next;         /* n_states x n_classes transitions */
    uint32_t *out;          /* longest term ending in this state, 0: none */
    uint32_t *depth;        /* length of the string this state stands for */
    size_t n_terms, max_len;
};

static uint8_t fold(uint8_t b) { return b >= 'A' && b <= 'Z' ? (uint8_t)(b + 32) : b; }

/* Step 1: a class for every (folded) byte used by some term. */
static void assign_classes(ac_automaton *a, const char *const *terms, const size_t *lens, size_t n)
{
    bool used[256] = {false};
    for (size_t i = 0; i < n; i++)
        for (size_t k = 0; k < lens[i]; k++)
            used[fold((uint8_t)terms[i][k])] = true;
    a->n_classes = 1;
    for (int b = 0; b < 256; b++)
        a->cls[b] = used[b] ? (uint8_t)a->n_classes++ : 0;
    for (int b = 'A'; b <= 'Z'; b++)
        a->cls[b] = a->cls[b + 32];
}

/* Step 2: the trie; 0 in a row means "no child" (the root is never a child). */
static void insert_term(ac_automaton *a, const char *term, size_t len)
{
    uint32_t s = 0;
    for (size_t k = 0; k < len; k++) {
        uint32_t *slot = &a->next[(size_t)s * a->n_classes + a->cls[(uint8_t)term[k]]];
        if (*slot == 0) {
            *slot = a->n_states;
            a->depth[a->n_states++] = (uint32_t)(k + 1);
        }
        s = *slot;
    }
    a->out[s] = (uint32_t)len;
}

/* Step 3: breadth-first, so that a state's failure target is complete before it. */
static int fill_transitions(ac_automaton *a)
{
    uint32_t *queue = malloc(sizeof(uint32_t) * a->n_states), *fail = calloc(a->n_states, sizeof(uint32_t));
    if (!queue || !fail) {
        free(queue);
        free(fail);
        return -1;
    }
    size_t head = 0, tail = 0;
    queue[tail++] = 0;
    while (head < tail) {
        uint32_t u = queue[head++];
        uint32_t *row = &a->next[(size_t)u * a->n_classes];
        const uint32_t *frow = &a->next[(size_t)fail[u] * a->n_classes];
        for (uint32_t c = 1; c < a->n_classes; c++) {
            uint32_t v = row[c];
            if (v == 0) {
                row[c] = u == 0 ? 0 : frow[c];
                continue;
            }
            fail[v] = u == 0 ? 0 : frow[c];
            if (a->out[v] == 0)
                a->out[v] = a->out[fail[v]];
            queue[tail++] = v;
        }
    }
    free(queue);
    free(fail);
    return 0;
}

ac_automaton *ac_build(const char *const *terms, const size_t *lens, size_t n, char *err, size_t errsz)
{
    ac_automaton *a = calloc(1, sizeof *a);
    size_t total = 1;
    for (size_t i = 0; i < n; i++)
        total += lens[i];
    if (a == NULL) goto oom;
    assign_classes(a, terms, lens, n);
    if (total > UINT32_MAX || total * a->n_classes > AC_MAX_TABLE_BYTES / sizeof(uint32_t)) {
        snprintf(err, errsz, "term list too large: %zu bytes over %u byte classes", total, a->n_classes);
        ac_free(a);
        return NULL;
    }
    a->next = calloc(total * a->n_classes, sizeof(uint32_t));
    a->out = calloc(total, sizeof(uint32_t));
    a->depth = calloc(total, sizeof(uint32_t));
    if (!a->next || !a->out || !a->depth) goto oom;
    a->n_states = 1;
    for (size_t i = 0; i < n; i++) {
        if (lens[i] == 0) continue;
        insert_term(a, terms[i], lens[i]);
        a->n_terms++;
        if (lens[i] > a->max_len) a->max_len = lens[i];
    }
    if (fill_transitions(a)) goto oom;
    return a;
oom:
    snprintf(err, errsz, "out of memory building the term automaton");
    ac_free(a);
    return NULL;
}

/* Splits buf (modified in place) into lines; returns how many terms were found. */
static size_t split_terms(char *buf, size_t len, const char **terms, size_t *lens)
{
    size_t n = 0;
    for (size_t i = 0; i < len;) {
        char *line = buf + i, *nl = memchr(line, '\n', len - i);
        size_t l = nl ? (size_t)(nl - line) : len - i;
        i += l + 1;
        if (l > 0 && line[l - 1] == '\r') l--;
        if (l == 0 || line[0] == '#') continue;
        terms[n] = line;
        lens[n++] = l;
    }
    return n;
}

ac_automaton *ac_load_file(const char *path, char *err, size_t errsz)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        snprintf(err, errsz, "cannot open term list %s: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    for (size_t got; buf && (got = fread(buf + len, 1, cap - len, f)) > 0;) {
        len += got;
        if (len == cap) {
            char *bigger = realloc(buf, cap *= 2);
            if (bigger == NULL) free(buf);
            buf = bigger;
        }
    }
    fclose(f);
    const char **terms = buf ? malloc(sizeof(char *) * (len / 2 + 1)) : NULL;
    size_t *lens = buf ? malloc(sizeof(size_t) * (len / 2 + 1)) : NULL;
    ac_automaton *a = NULL;
    if (terms && lens)
        a = ac_build(terms, lens, split_terms(buf, len, terms, lens), err, errsz);
    else
        snprintf(err, errsz, "out of memory reading %s", path);
    free(terms);
    free(lens);
    free(buf);
    return a;
}

void ac_free(ac_automaton *a)
{
    if (a == NULL) return;
    free(a->next);
    free(a->out);
    free(a->depth);
    free(a);
}

size_t ac_term_count(const ac_automaton *a) { return a ? a->n_terms : 0; }
size_t ac_max_term_len(const ac_automaton *a) { return a ? a->max_len : 0; }

/* The hot loop: one load for the class, one for the transition, one for the output. */
size_t ac_feed(const ac_automaton *a, ac_state *st, const void *text, size_t len, size_t *match_len)
{
    if (a == NULL || a->n_terms == 0) return 0;
    const uint8_t *p = text;
    const uint32_t *next = a->next, *out = a->out;
    uint32_t s = *st, nc = a->n_classes;
    for (size_t i = 0; i < len; i++) {
        s = next[(size_t)s * nc + a->cls[p[i]]];
        if (out[s]) {
            *st = s;
            if (match_len) *match_len = out[s];
            return i + 1;
        }
    }
    *st = s;
    return 0;
}

size_t ac_count(const ac_automaton *a, const void *text, size_t len)
{
    size_t count = 0, used, mlen;
    ac_state st = AC_START;
    const char *p = text;
    while (len > 0 && (used = ac_feed(a, &st, p, len, &mlen)) > 0) {
        count++;
        p += used;
        len -= used;
    }
    return count;
}

size_t ac_depth(const ac_automaton *a, ac_state st) { return a && st < a->n_states ? a->depth[st] : 0; }
