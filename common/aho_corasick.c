/* aho_corasick.c - the blocked-term automaton (see aho_corasick.h).
 *
 * Word boundaries are a symbol of their own: between a word byte and a non-word byte
 * (either way round, and before a text's first word byte and after its last) the
 * stream holds a virtual BOUNDARY symbol, and a term is inserted with BOUNDARY at the
 * same places. "ass" becomes [B]ass[B], and "class" reads [B]class[B], which does not
 * contain it; "an ass." reads [B]an[B] [B]ass[B]. that does.
 *
 * Built in four steps: (1) bytes are mapped to classes (bytes that occur in no term
 * share class 0; A-Z share their lower-case letter's class; BOUNDARY is the last
 * class), so that a table row is n_classes wide instead of 256; (2) the terms, with
 * their boundaries, go into a trie stored in a dense table; (3) a breadth-first pass
 * fills every missing transition from the failure link, turning the trie into a DFA;
 * (4) the DFA is laid out for scanning: states renumbered in breadth-first order (the
 * states near the root, where a scan spends nearly all its time, share a few cache
 * lines), each transition stored as the target's row offset with flag bits saying a
 * term ends there, and each row doubled: the second half takes BOUNDARY and then a
 * byte in one step, so the scan never feeds the virtual symbol itself. A byte's column
 * comes from a 2x256 table indexed by whether the previous byte was a word byte.
 *
 * The hot loop is then one dependent load a byte (next[s + column]), with no
 * multiplication and no second lookup for outputs unless a flag is set.
 */
#include "aho_corasick.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OFFSET_MASK 0x3fffffffu   /* row offset of the target state */
#define ENDS_AFTER 0x40000000u    /* a term ends after this byte */
#define ENDS_BEFORE 0x80000000u   /* a term ended at the boundary before this byte */
#define STATE_WORD 0x80000000u    /* in an ac_state: the last byte fed was a word byte */
#define COLUMN_MASK 0x7fffu

struct ac_automaton {
    uint16_t column[2][256];  /* [previous byte was a word byte][byte] -> column | word<<15 */
    uint8_t word[256];        /* 1 for the word bytes: ASCII letters and digits */
    uint32_t n_classes;       /* byte classes + BOUNDARY: a row has 2 * n_classes columns */
    uint32_t boundary;        /* BOUNDARY's class */
    uint32_t width;           /* 2 * n_classes */
    uint32_t n_states;
    uint32_t *next;           /* n_states x width transitions */
    uint32_t *out;            /* by state: longest term (bytes) ending there, 0: none */
    uint32_t *depth;          /* by state: bytes of text the state stands for */
    size_t n_terms, max_len;
};

static uint8_t fold(uint8_t b) { return b >= 'A' && b <= 'Z' ? (uint8_t)(b + 32) : b; }
static bool is_word(uint8_t b)
{
    return (b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z') || (b >= '0' && b <= '9');
}

/* Step 1: a class for every (folded) byte used by some term, then BOUNDARY. */
static void assign_classes(ac_automaton *a, uint8_t cls[256], const char *const *terms, const size_t *lens, size_t n)
{
    bool used[256] = {false};
    for (size_t i = 0; i < n; i++)
        for (size_t k = 0; k < lens[i]; k++) used[fold((uint8_t)terms[i][k])] = true;
    uint32_t next = 1;
    for (int b = 0; b < 256; b++) cls[b] = used[b] ? (uint8_t)next++ : 0;
    for (int b = 'A'; b <= 'Z'; b++) cls[b] = cls[b + 32];
    a->boundary = next;
    a->n_classes = next + 1;
    a->width = 2 * a->n_classes;
    for (int b = 0; b < 256; b++) a->word[b] = is_word((uint8_t)b);
    for (int pw = 0; pw < 2; pw++)
        for (int b = 0; b < 256; b++) {
            bool w = is_word((uint8_t)b);
            a->column[pw][b] = (uint16_t)(cls[b] + (w != (bool)pw ? a->n_classes : 0) + (w ? 0x8000 : 0));
        }
}

/* The build's trie: a dense table, 0 meaning "no child" (the root is never a child). */
typedef struct trie {
    uint32_t *next, *out, *depth;
    uint32_t n_states, n_classes;
} trie;

static uint32_t trie_step(trie *t, uint32_t s, uint32_t c, uint32_t depth)
{
    uint32_t *slot = &t->next[(size_t)s * t->n_classes + c];
    if (*slot == 0) {
        *slot = t->n_states;
        t->depth[t->n_states++] = depth;
    }
    return *slot;
}

/* Step 2: one term, with BOUNDARY wherever the word/non-word kind changes. */
static void insert_term(trie *t, const ac_automaton *a, const uint8_t cls[256], const char *term, size_t len)
{
    uint32_t s = 0;
    bool prev_word = false;
    for (size_t k = 0; k < len; k++) {
        uint8_t b = (uint8_t)term[k];
        if (is_word(b) != prev_word) s = trie_step(t, s, a->boundary, (uint32_t)k);
        s = trie_step(t, s, cls[b], (uint32_t)(k + 1));
        prev_word = is_word(b);
    }
    if (prev_word) s = trie_step(t, s, a->boundary, (uint32_t)len);
    t->out[s] = (uint32_t)len;
}

/* Step 3: breadth-first, so that a state's failure target is complete before it.
 * Leaves the breadth-first order in order[]. */
static int fill_transitions(trie *t, uint32_t *order)
{
    uint32_t *fail = calloc(t->n_states, sizeof(uint32_t));
    if (fail == NULL) return -1;
    size_t head = 0, tail = 0;
    order[tail++] = 0;
    while (head < tail) {
        uint32_t u = order[head++];
        uint32_t *row = &t->next[(size_t)u * t->n_classes];
        const uint32_t *frow = &t->next[(size_t)fail[u] * t->n_classes];
        for (uint32_t c = 1; c < t->n_classes; c++) {
            uint32_t v = row[c];
            if (v == 0) {
                row[c] = u == 0 ? 0 : frow[c];
                continue;
            }
            fail[v] = u == 0 ? 0 : frow[c];
            if (t->out[v] == 0) t->out[v] = t->out[fail[v]];
            order[tail++] = v;
        }
    }
    free(fail);
    return 0;
}

/* Step 4: the scanning table in breadth-first order. */
static int lay_out(ac_automaton *a, const trie *t, const uint32_t *order)
{
    uint32_t *rank = malloc(sizeof(uint32_t) * t->n_states);
    a->next = malloc(sizeof(uint32_t) * (size_t)t->n_states * a->width);
    a->out = malloc(sizeof(uint32_t) * t->n_states);
    a->depth = malloc(sizeof(uint32_t) * t->n_states);
    if (!rank || !a->next || !a->out || !a->depth) {
        free(rank);
        return -1;
    }
    for (uint32_t u = 0; u < t->n_states; u++) rank[order[u]] = u;
    const uint32_t nc = t->n_classes, w = a->width;
#define ENTRY(old) (rank[old] * w | (t->out[old] ? ENDS_AFTER : 0))
    for (uint32_t u = 0; u < t->n_states; u++) {
        uint32_t old = order[u], *row = &a->next[(size_t)u * w];
        const uint32_t *trow = &t->next[(size_t)old * nc];
        uint32_t mid = trow[a->boundary];
        const uint32_t *mrow = &t->next[(size_t)mid * nc];
        for (uint32_t c = 0; c < nc; c++) {
            row[c] = ENTRY(trow[c]);
            row[nc + c] = ENTRY(mrow[c]) | (t->out[mid] ? ENDS_BEFORE : 0);
        }
        a->out[u] = t->out[old];
        a->depth[u] = t->depth[old];
    }
#undef ENTRY
    a->n_states = t->n_states;
    free(rank);
    return 0;
}

ac_automaton *ac_build(const char *const *terms, const size_t *lens, size_t n, char *err, size_t errsz)
{
    ac_automaton *a = calloc(1, sizeof *a);
    trie t = {0};
    uint32_t *order = NULL;
    uint8_t cls[256];
    size_t total = 1;
    for (size_t i = 0; i < n; i++) total += 2 * lens[i] + 1;   /* at worst a boundary around every byte */
    if (a == NULL) goto oom;
    assign_classes(a, cls, terms, lens, n);
    if (total > OFFSET_MASK || total * a->width > AC_MAX_TABLE_BYTES / sizeof(uint32_t)) {
        snprintf(err, errsz, "term list too large: %zu bytes over %u byte classes", total, a->n_classes);
        ac_free(a);
        return NULL;
    }
    t.n_classes = a->n_classes;
    t.next = calloc(total * t.n_classes, sizeof(uint32_t));
    t.out = calloc(total, sizeof(uint32_t));
    t.depth = calloc(total, sizeof(uint32_t));
    order = malloc(sizeof(uint32_t) * total);
    if (!t.next || !t.out || !t.depth || !order) goto oom;
    t.n_states = 1;
    for (size_t i = 0; i < n; i++) {
        if (lens[i] == 0) continue;
        insert_term(&t, a, cls, terms[i], lens[i]);
        a->n_terms++;
        if (lens[i] > a->max_len) a->max_len = lens[i];
    }
    if (fill_transitions(&t, order) || lay_out(a, &t, order)) goto oom;
    free(t.next);
    free(t.out);
    free(t.depth);
    free(order);
    return a;
oom:
    snprintf(err, errsz, "out of memory building the term automaton");
    free(t.next);
    free(t.out);
    free(t.depth);
    free(order);
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

/* A flagged transition, off the hot path: which term ended, and where the scan stands. */
static size_t found(const ac_automaton *a, ac_state *st, uint32_t s, uint16_t in, uint32_t e, size_t i, size_t *end,
                    size_t *match_len)
{
    uint32_t word = in & 0x8000 ? STATE_WORD : 0;
    if (e & ENDS_BEFORE) {
        /* Stop between the boundary and this byte: feeding the byte again from here
         * (the word flag already its own) makes the same step without the boundary. */
        uint32_t mid = a->next[s + a->boundary] & OFFSET_MASK;
        *st = mid | word;
        *end = i;
        *match_len = a->out[mid / a->width];
    } else {
        *st = (e & OFFSET_MASK) | word;
        *end = i + 1;
        *match_len = a->out[(e & OFFSET_MASK) / a->width];
    }
    return true;
}

bool ac_feed(const ac_automaton *a, ac_state *st, const void *text, size_t len, size_t *end, size_t *match_len)
{
    if (a == NULL || a->n_terms == 0 || len == 0) return false;
    const uint8_t *p = text;
    const uint32_t *next = a->next;
    const uint16_t *column = &a->column[0][0];
    uint32_t s = *st & OFFSET_MASK;
    /* The column of byte i depends on byte i-1 only (its word flag), read from the
     * text rather than from the previous step, so that the only chain of dependent
     * loads from byte to byte is the state's. */
    uint16_t in = column[(*st & STATE_WORD ? 256 : 0) + p[0]];
    for (size_t i = 0;;) {
        uint32_t e = next[s + (in & COLUMN_MASK)];
        if (e & (ENDS_AFTER | ENDS_BEFORE)) return found(a, st, s, in, e, i, end, match_len);
        s = e;
        if (++i == len) break;
        in = column[(a->word[p[i - 1]] << 8) + p[i]];
    }
    *st = s | (a->word[p[len - 1]] ? STATE_WORD : 0);
    return false;
}

bool ac_finish(const ac_automaton *a, ac_state *st, size_t *match_len)
{
    if (a == NULL || a->n_terms == 0 || !(*st & STATE_WORD)) return false;
    uint32_t e = a->next[(*st & OFFSET_MASK) + a->boundary];
    *st = e & OFFSET_MASK;
    if (!(e & ENDS_AFTER)) return false;
    *match_len = a->out[(e & OFFSET_MASK) / a->width];
    return true;
}

size_t ac_count(const ac_automaton *a, const void *text, size_t len)
{
    size_t count = 0, end, mlen;
    ac_state st = AC_START;
    const char *p = text;
    while (len > 0 && ac_feed(a, &st, p, len, &end, &mlen)) {
        count++;
        p += end;
        len -= end;
    }
    return count + ac_finish(a, &st, &mlen);
}

size_t ac_depth(const ac_automaton *a, ac_state st)
{
    if (a == NULL || a->n_terms == 0) return 0;
    uint32_t u = (st & OFFSET_MASK) / a->width;
    return u < a->n_states ? a->depth[u] : 0;
}
