/* tokenizer.c - text to token ids and back (see tokenizer.h), the way llama.cpp does it
 * for the two families of vocabularies GGUF files carry.
 *
 * Both families merge adjacent symbols greedily; only the order differs:
 *   SentencePiece ("llama")  symbols start as UTF-8 characters of the text (spaces as
 *                            U+2581); the pair whose concatenation is the vocabulary
 *                            piece with the highest score merges first. A final symbol
 *                            missing from the vocabulary becomes <0xNN> byte tokens.
 *   byte-level BPE ("gpt2")  the text is first cut into words by a pre-tokenizer
 *                            (hand-written versions of the regexes that
 *                            `tokenizer.ggml.pre` names); each word's bytes become
 *                            printable characters (GPT-2's byte-to-unicode map), and
 *                            the pair with the lowest rank in `tokenizer.ggml.merges`
 *                            merges first.
 * One merge engine (merge_symbols) serves both: a doubly linked list of symbols and a
 * binary heap of candidate pairs, so a long word costs n log n, not n^2.
 *
 * Special tokens (control and user-defined) are cut out of the text first, longest
 * first, and emitted as they are.
 */
#include "tokenizer/tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/unicode_tables.h"

enum token_kind { KIND_NORMAL = 1, KIND_UNKNOWN = 2, KIND_CONTROL = 3, KIND_USER = 4, KIND_UNUSED = 5, KIND_BYTE = 6 };
enum vocab_family { FAMILY_SPM, FAMILY_BPE };
enum pre_split { PRE_GPT2, PRE_SMOLLM, PRE_LLAMA3, PRE_QWEN2 };

/* A string -> value map with open addressing; keys point into memory the tokenizer
 * owns. Used for piece -> id and for "left right" merge -> rank. */
typedef struct str_map {
    const char **keys;
    int *key_lens;
    int *values;
    uint32_t *hashes;     /* compared before the bytes: most probes then cost no memcmp */
    size_t mask;
} str_map;

#define MAX_TEXT_BYTES (1u << 28)  /* symbol offsets are ints; SPM triples the text */
#define CP_BYTE_MAX 324  /* the byte characters are U+0021..U+0143 */

struct tokenizer {
    enum vocab_family family;
    enum pre_split pre;
    int n_vocab;
    char **pieces;        /* NUL-terminated copies */
    int *piece_lens;
    float *scores;        /* SPM merge priority */
    int *kinds;           /* enum token_kind */
    str_map piece_ids;
    char **merges;        /* BPE: "left right", rank = index */
    int n_merges;
    str_map merge_ranks;
    int32_t byte_tokens[256];  /* SPM: <0xNN>; BPE: the token of the byte's character */
    int32_t bos, eos, eot, eom, unk;
    bool add_bos, add_space_prefix;
    int32_t *specials;    /* control and user-defined tokens, longest text first */
    int n_specials;
    bool special_first[256];  /* bytes a special token starts with: most positions skip the scan */
    bool ignore_merges;   /* llama3: a word that is a whole piece is taken as it is */
    uint32_t byte_cp[256];         /* BPE: byte -> the character standing for it */
    int16_t cp_byte[CP_BYTE_MAX];  /* and back; -1 for characters that stand for none */
    bool *eog;            /* per id: ends a generation */
};

/* ---- string map ------------------------------------------------------------------- */

static uint64_t hash_bytes(const char *s, int n)
{
    uint64_t h = 1469598103934665603ull;  /* FNV-1a */
    for (int i = 0; i < n; i++)
        h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
    return h;
}

static int map_init(str_map *m, size_t n)
{
    size_t cap = 16;
    while (cap < 2 * n) cap *= 2;
    m->keys = calloc(cap, sizeof *m->keys);
    m->key_lens = calloc(cap, sizeof *m->key_lens);
    m->values = calloc(cap, sizeof *m->values);
    m->hashes = calloc(cap, sizeof *m->hashes);
    m->mask = cap - 1;
    return m->keys && m->key_lens && m->values && m->hashes ? 0 : -1;
}

static void map_free(str_map *m)
{
    free(m->keys);
    free(m->key_lens);
    free(m->values);
    free(m->hashes);
}

/* Inserts unless the key is present (the first id of a duplicated piece wins). */
static bool map_slot_is(const str_map *m, size_t i, uint32_t h, const char *key, int len)
{
    return m->hashes[i] == h && m->key_lens[i] == len && !memcmp(m->keys[i], key, (size_t)len);
}

static void map_put(str_map *m, const char *key, int len, int value)
{
    uint64_t h = hash_bytes(key, len);
    for (size_t i = h & m->mask;; i = (i + 1) & m->mask) {
        if (m->keys[i] == NULL) {
            m->keys[i] = key;
            m->key_lens[i] = len;
            m->values[i] = value;
            m->hashes[i] = (uint32_t)(h >> 32);
            return;
        }
        if (map_slot_is(m, i, (uint32_t)(h >> 32), key, len))
            return;
    }
}

static int map_get(const str_map *m, const char *key, int len)
{
    uint64_t h = hash_bytes(key, len);
    for (size_t i = h & m->mask; m->keys[i]; i = (i + 1) & m->mask)
        if (map_slot_is(m, i, (uint32_t)(h >> 32), key, len))
            return m->values[i];
    return -1;
}

/* ---- UTF-8 and character classes -------------------------------------------------- */

/* Length of the UTF-8 sequence starting with byte c (1 for stray bytes). */
static int utf8_len(uint8_t c)
{
    return c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
}

/* Decodes the code point at s[0..n); *len gets its byte length (1 for invalid bytes,
 * which decode as themselves so that nothing is ever lost). */
static uint32_t utf8_decode(const char *s, size_t n, int *len)
{
    const uint8_t *u = (const uint8_t *)s;
    int l = utf8_len(u[0]);
    if (l == 1 || (size_t)l > n) {
        *len = 1;
        return u[0];
    }
    uint32_t cp = u[0] & (0x7f >> l);
    for (int i = 1; i < l; i++) {
        if ((u[i] & 0xc0) != 0x80) {
            *len = 1;
            return u[0];
        }
        cp = (cp << 6) | (u[i] & 0x3f);
    }
    *len = l;
    return cp;
}

static int utf8_encode(uint32_t cp, char *out)
{
    if (cp < 0x80) { out[0] = (char)cp; return 1; }
    if (cp < 0x800) { out[0] = (char)(0xc0 | (cp >> 6)); out[1] = (char)(0x80 | (cp & 0x3f)); return 2; }
    if (cp < 0x10000) {
        out[0] = (char)(0xe0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    out[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

static bool in_ranges(uint32_t cp, const uint32_t (*r)[2], size_t n)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < r[mid][0]) hi = mid;
        else if (cp > r[mid][1]) lo = mid + 1;
        else return true;
    }
    return false;
}

static bool is_letter(uint32_t cp)
{
    if (cp < 0x80) return (cp | 0x20) >= 'a' && (cp | 0x20) <= 'z';
    return in_ranges(cp, unicode_letters, sizeof unicode_letters / sizeof unicode_letters[0]);
}

static bool is_number(uint32_t cp)
{
    if (cp < 0x80) return cp >= '0' && cp <= '9';
    return in_ranges(cp, unicode_numbers, sizeof unicode_numbers / sizeof unicode_numbers[0]);
}

/* Unicode's White_Space property, which is what \s means in the pre-tokenizers. */
static bool is_space(uint32_t cp)
{
    return (cp >= 0x09 && cp <= 0x0d) || cp == 0x20 || cp == 0x85 || cp == 0xa0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200a) || cp == 0x2028 || cp == 0x2029 || cp == 0x202f ||
           cp == 0x205f || cp == 0x3000;
}

/* ---- GPT-2 byte <-> printable character -------------------------------------------- */

static bool printable_byte(int b) { return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174; }

/* Bytes that are printable Latin-1 stand for themselves; the others are moved to
 * U+0100 and up, in byte order. Both directions are tables in the tokenizer, filled at
 * load, since every byte of every encoded word goes through them. */
static void fill_byte_maps(tokenizer *t)
{
    int moved = 0;
    for (uint32_t cp = 0; cp < CP_BYTE_MAX; cp++)
        t->cp_byte[cp] = -1;
    for (int b = 0; b < 256; b++) {
        t->byte_cp[b] = printable_byte(b) ? (uint32_t)b : 256 + (uint32_t)moved++;
        t->cp_byte[t->byte_cp[b]] = (int16_t)b;
    }
}

static int cp_to_byte(const tokenizer *t, uint32_t cp)
{
    return cp < CP_BYTE_MAX ? t->cp_byte[cp] : -1;
}

/* ---- the merge engine --------------------------------------------------------------- */

typedef struct symbol {
    int begin, len;       /* bytes of the working text */
    int prev, next;       /* list of live symbols; -1 at the ends */
} symbol;

typedef struct candidate {
    float priority;       /* larger merges first */
    int left, len;        /* the pair's left symbol and its combined length when queued */
} candidate;

typedef struct heap {
    candidate *items;
    int n, cap;
} heap;

static bool before(candidate a, candidate b)
{
    return a.priority > b.priority || (a.priority == b.priority && a.left < b.left);
}

static int heap_push(heap *h, candidate c)
{
    if (h->n == h->cap) {
        int cap = h->cap ? 2 * h->cap : 64;
        candidate *items = realloc(h->items, sizeof *items * (size_t)cap);
        if (items == NULL) return -1;
        h->items = items;
        h->cap = cap;
    }
    int i = h->n++;
    h->items[i] = c;
    while (i > 0 && before(h->items[i], h->items[(i - 1) / 2])) {
        candidate t = h->items[i];
        h->items[i] = h->items[(i - 1) / 2];
        h->items[(i - 1) / 2] = t;
        i = (i - 1) / 2;
    }
    return 0;
}

static candidate heap_pop(heap *h)
{
    candidate top = h->items[0];
    h->items[0] = h->items[--h->n];
    for (int i = 0;;) {
        int l = 2 * i + 1, r = l + 1, best = i;
        if (l < h->n && before(h->items[l], h->items[best])) best = l;
        if (r < h->n && before(h->items[r], h->items[best])) best = r;
        if (best == i) break;
        candidate t = h->items[i];
        h->items[i] = h->items[best];
        h->items[best] = t;
        i = best;
    }
    return top;
}

/* The priority of merging symbols a and b, or false when they may not merge. */
static bool pair_priority(const tokenizer *t, const char *text, const symbol *a, const symbol *b,
                          float *priority)
{
    if (t->family == FAMILY_SPM) {
        int id = map_get(&t->piece_ids, text + a->begin, a->len + b->len);
        if (id < 0) return false;
        *priority = t->scores[id];
        return true;
    }
    char key[512];
    if (a->len + b->len + 1 > (int)sizeof key) return false;
    memcpy(key, text + a->begin, (size_t)a->len);
    key[a->len] = ' ';
    memcpy(key + a->len + 1, text + b->begin, (size_t)b->len);
    int rank = map_get(&t->merge_ranks, key, a->len + b->len + 1);
    if (rank < 0) return false;
    *priority = -(float)rank;
    return true;
}

static int queue_pair(const tokenizer *t, const char *text, symbol *sym, int left, heap *h)
{
    if (left < 0 || sym[left].next < 0) return 0;
    float priority;
    const symbol *a = &sym[left], *b = &sym[sym[left].next];
    if (!pair_priority(t, text, a, b, &priority)) return 0;
    return heap_push(h, (candidate){priority, left, a->len + b->len});
}

/* Splits text[0..n) into characters and merges them; returns the symbol count (the
 * live ones are linked from index 0), or -1 when out of memory. */
static int merge_symbols(const tokenizer *t, const char *text, int n, symbol **out)
{
    symbol *sym = malloc(sizeof *sym * (size_t)(n > 0 ? n : 1));
    heap h = {0};
    int count = 0;
    if (sym == NULL) return -1;
    for (int pos = 0; pos < n; count++) {
        int len = utf8_len((uint8_t)text[pos]);
        if (pos + len > n) len = n - pos;
        sym[count] = (symbol){pos, len, count - 1, pos + len < n ? count + 1 : -1};
        pos += len;
    }
    int rc = 0;
    for (int i = 0; i + 1 < count && rc == 0; i++)
        rc = queue_pair(t, text, sym, i, &h);
    while (h.n > 0 && rc == 0) {
        candidate c = heap_pop(&h);
        symbol *a = &sym[c.left];
        if (a->len == 0 || a->next < 0 || a->len + sym[a->next].len != c.len)
            continue;  /* stale: one side has merged since */
        symbol *b = &sym[a->next];
        a->len += b->len;
        b->len = 0;
        a->next = b->next;
        if (a->next >= 0) sym[a->next].prev = c.left;
        rc = queue_pair(t, text, sym, a->prev, &h);
        if (rc == 0) rc = queue_pair(t, text, sym, c.left, &h);
    }
    free(h.items);
    if (rc) {
        free(sym);
        return -1;
    }
    *out = sym;
    return count;
}

/* ---- output buffer ---------------------------------------------------------------- */

typedef struct id_out {
    int32_t *ids;
    int cap, n;
} id_out;

static void emit(id_out *o, int32_t id)
{
    if (o->n < o->cap) o->ids[o->n] = id;
    o->n++;
}

/* A vocabulary without the byte piece and without an unknown token drops the byte
 * rather than emitting an invalid id (llama.cpp's BPE does the same). */
static void emit_known(id_out *o, int32_t id)
{
    if (id >= 0) emit(o, id);
}

/* A merged symbol as tokens: its piece, or else its bytes one token each. */
static void emit_symbol(const tokenizer *t, const char *text, const symbol *s, id_out *o)
{
    int id = map_get(&t->piece_ids, text + s->begin, s->len);
    if (id >= 0) {
        emit(o, id);
        return;
    }
    if (t->family == FAMILY_SPM) {
        for (int i = 0; i < s->len; i++) {
            int32_t b = t->byte_tokens[(uint8_t)text[s->begin + i]];
            emit_known(o, b >= 0 ? b : t->unk);
        }
        return;
    }
    for (int i = 0; i < s->len;) {  /* BPE: each (byte-mapped) character on its own */
        int l;
        utf8_decode(text + s->begin + i, (size_t)(s->len - i), &l);
        int cid = map_get(&t->piece_ids, text + s->begin + i, l);
        emit_known(o, cid >= 0 ? cid : t->unk);
        i += l;
    }
}

static int merge_and_emit(const tokenizer *t, const char *text, int n, id_out *o)
{
    if (n == 0) return 0;
    if (t->ignore_merges) {
        int id = map_get(&t->piece_ids, text, n);
        if (id >= 0) {
            emit(o, id);
            return 0;
        }
    }
    symbol *sym;
    if (merge_symbols(t, text, n, &sym) < 0) return -1;
    for (int i = 0; i >= 0; i = sym[i].next)
        emit_symbol(t, text, &sym[i], o);
    free(sym);
    return 0;
}

/* ---- SentencePiece ---------------------------------------------------------------- */

static int spm_encode_fragment(const tokenizer *t, const char *text, size_t len, bool space_prefix, id_out *o)
{
    size_t cap = 3 * (len + 1);
    char *buf = malloc(cap);
    if (buf == NULL) return -1;
    size_t n = 0;
    if (space_prefix) {
        memcpy(buf, "\xe2\x96\x81", 3);
        n = 3;
    }
    for (size_t i = 0; i < len; i++) {
        if (text[i] == ' ') {
            memcpy(buf + n, "\xe2\x96\x81", 3);
            n += 3;
        } else {
            buf[n++] = text[i];
        }
    }
    int rc = merge_and_emit(t, buf, (int)n, o);
    free(buf);
    return rc;
}

/* ---- BPE pre-tokenizers ------------------------------------------------------------ */

/* The text as code points, so the splitters can look ahead freely. */
typedef struct cps {
    uint32_t *cp;
    int *offset;   /* byte offset of each code point; offset[n] = byte length */
    int n;
} cps;

static int decode_all(const char *text, size_t len, cps *c)
{
    c->cp = malloc(sizeof *c->cp * (len + 1));
    c->offset = malloc(sizeof *c->offset * (len + 1));
    if (!c->cp || !c->offset) return -1;
    c->n = 0;
    for (size_t i = 0; i < len;) {
        int l;
        c->cp[c->n] = utf8_decode(text + i, len - i, &l);
        c->offset[c->n++] = (int)i;
        i += (size_t)l;
    }
    c->offset[c->n] = (int)len;
    return 0;
}

static bool is_other(uint32_t cp) { return !is_space(cp) && !is_letter(cp) && !is_number(cp); }

/* 's 't 're 've 'm 'll 'd at i (case-insensitively when nocase); returns its length. */
static int contraction(const cps *c, int i, bool nocase)
{
    if (c->cp[i] != '\'' || i + 1 >= c->n) return 0;
    uint32_t a = c->cp[i + 1], b = i + 2 < c->n ? c->cp[i + 2] : 0;
    if (nocase) {
        if (a < 128) a |= 0x20 * ((a >= 'A' && a <= 'Z'));
        if (b < 128) b |= 0x20 * ((b >= 'A' && b <= 'Z'));
    }
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
    return 0;
}

static int run_of(const cps *c, int i, bool (*cls)(uint32_t))
{
    int j = i;
    while (j < c->n && cls(c->cp[j])) j++;
    return j - i;
}

/* \s+(?!\S)|\s+ at i: a run of spaces, less its last one when a non-space follows (that
 * one then prefixes the next word). */
static int space_run(const cps *c, int i)
{
    int n = run_of(c, i, is_space);
    return (i + n < c->n && n > 1) ? n - 1 : n;
}

/* GPT-2: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
static int gpt2_token(const cps *c, int i)
{
    int n = contraction(c, i, false);
    if (n) return n;
    int sp = c->cp[i] == ' ' && i + 1 < c->n ? 1 : 0;
    uint32_t x = c->cp[i + sp];
    if (!is_space(x) || sp == 0) {
        if (is_letter(x)) return sp + run_of(c, i + sp, is_letter);
        if (is_number(x)) return sp + run_of(c, i + sp, is_number);
        if (is_other(x)) return sp + run_of(c, i + sp, is_other);
    }
    return space_run(c, i);
}

/* llama3: (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}
 *         | ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+     (qwen2: \p{N} alone) */
static int llama3_token(const cps *c, int i, int max_digits)
{
    int n = contraction(c, i, true);
    if (n) return n;
    uint32_t x = c->cp[i];
    bool lead = x != '\r' && x != '\n' && !is_letter(x) && !is_number(x);
    if (is_letter(x)) return run_of(c, i, is_letter);
    if (lead && i + 1 < c->n && is_letter(c->cp[i + 1])) return 1 + run_of(c, i + 1, is_letter);
    if (is_number(x)) {
        n = run_of(c, i, is_number);
        return n < max_digits ? n : max_digits;
    }
    int sp = x == ' ' && i + 1 < c->n && is_other(c->cp[i + 1]) ? 1 : 0;
    if (is_other(c->cp[i + sp])) {
        n = sp + run_of(c, i + sp, is_other);
        while (i + n < c->n && (c->cp[i + n] == '\r' || c->cp[i + n] == '\n')) n++;
        return n;
    }
    /* \s*[\r\n]+ : spaces up to and including the last newline of the run */
    int run = run_of(c, i, is_space), last_nl = -1;
    for (int j = i; j < i + run; j++)
        if (c->cp[j] == '\r' || c->cp[j] == '\n') last_nl = j;
    if (last_nl >= 0) return last_nl - i + 1;
    return space_run(c, i);
}

/* The first index at or after i whose code point is a number (c->n when none). */
static int next_number(const cps *c, int i)
{
    while (i < c->n && !is_number(c->cp[i])) i++;
    return i;
}

/* Cuts text into words and runs BPE on each. */
static int bpe_encode_fragment(const tokenizer *t, const char *text, size_t len, id_out *o)
{
    cps c;
    if (decode_all(text, len, &c)) {
        free(c.cp);
        free(c.offset);
        return -1;
    }
    char *word = malloc(len * 2 + 4);  /* every byte maps to a 1- or 2-byte character */
    int rc = word ? 0 : -1;
    int digit = -1;  /* smollm: the next number at or after i, so the scan stays linear */
    for (int i = 0; i < c.n && rc == 0;) {
        int n;
        if (t->pre == PRE_SMOLLM && digit < i) digit = next_number(&c, i);
        if (t->pre == PRE_SMOLLM && digit == i) {
            n = 1;  /* digits one by one, then GPT-2 on what lies between */
        } else if (t->pre == PRE_SMOLLM) {
            cps part = {c.cp, c.offset, digit};
            n = gpt2_token(&part, i);
        } else if (t->pre == PRE_LLAMA3 || t->pre == PRE_QWEN2) {
            n = llama3_token(&c, i, t->pre == PRE_LLAMA3 ? 3 : 1);
        } else {
            n = gpt2_token(&c, i);
        }
        if (n <= 0) n = 1;
        int wlen = 0;
        for (int b = c.offset[i]; b < c.offset[i + n]; b++)
            wlen += utf8_encode(t->byte_cp[(uint8_t)text[b]], word + wlen);
        rc = merge_and_emit(t, word, wlen, o);
        i += n;
    }
    free(word);
    free(c.cp);
    free(c.offset);
    return rc;
}

/* ---- encode ------------------------------------------------------------------------- */

/* The special token that starts text[0..len), longest first, or -1. */
static int32_t special_at(const tokenizer *t, const char *text, size_t len, bool parse_special)
{
    for (int i = 0; i < t->n_specials; i++) {
        int32_t id = t->specials[i];
        if (!parse_special && t->kinds[id] != KIND_USER) continue;
        size_t pl = (size_t)t->piece_lens[id];
        if (pl > 0 && pl <= len && !memcmp(text, t->pieces[id], pl))
            return id;
    }
    return -1;
}

/* SPM puts its space prefix on every text fragment, since each one follows either the
 * start of the text or a special token (llama.cpp does the same). */
static int encode_fragment(const tokenizer *t, const char *text, size_t len, id_out *o)
{
    if (len == 0) return 0;
    if (t->family == FAMILY_SPM)
        return spm_encode_fragment(t, text, len, t->add_space_prefix, o);
    return bpe_encode_fragment(t, text, len, o);
}

int tokenizer_encode(const tokenizer *t, const char *text, size_t len, bool add_bos,
                     bool parse_special, int32_t *ids, int cap)
{
    id_out o = {ids, cap, 0};
    if (len > MAX_TEXT_BYTES) return -1;
    if (add_bos && t->bos >= 0) emit(&o, t->bos);
    size_t start = 0;
    for (size_t i = 0; i < len;) {
        int32_t sp = t->special_first[(uint8_t)text[i]] ? special_at(t, text + i, len - i, parse_special) : -1;
        if (sp < 0) {
            i++;
            continue;
        }
        if (encode_fragment(t, text + start, i - start, &o)) return -1;
        emit(&o, sp);
        i += (size_t)t->piece_lens[sp];
        start = i;
    }
    if (encode_fragment(t, text + start, len - start, &o)) return -1;
    return o.n;
}

/* ---- decode ------------------------------------------------------------------------- */

static int put_bytes(char *buf, int cap, int at, const char *src, int n)
{
    for (int i = 0; i < n; i++)
        if (at + i < cap) buf[at + i] = src[i];
    return at + n;
}

/* "<0xNN>" -> NN, or -1. */
static int byte_piece_value(const char *p)
{
    unsigned v;
    char end;
    if (strlen(p) == 6 && sscanf(p, "<0x%2X%c", &v, &end) == 2 && end == '>') return (int)v;
    return -1;
}

int tokenizer_token_bytes(const tokenizer *t, int32_t id, bool render_special, char *buf, int cap)
{
    if (id < 0 || id >= t->n_vocab) return -1;
    const char *p = t->pieces[id];
    int kind = t->kinds[id], n = 0;
    if (kind == KIND_CONTROL || kind == KIND_UNUSED || kind == KIND_UNKNOWN)  /* as llama.cpp */
        return render_special ? put_bytes(buf, cap, 0, p, t->piece_lens[id]) : 0;
    if (kind == KIND_USER)
        return put_bytes(buf, cap, 0, p, t->piece_lens[id]);
    if (t->family == FAMILY_SPM) {
        if (kind == KIND_BYTE) {
            char b = (char)byte_piece_value(p);
            return put_bytes(buf, cap, 0, &b, 1);
        }
        for (int i = 0; i < t->piece_lens[id];) {
            if (i + 3 <= t->piece_lens[id] && !memcmp(p + i, "\xe2\x96\x81", 3)) {
                n = put_bytes(buf, cap, n, " ", 1);
                i += 3;
            } else {
                n = put_bytes(buf, cap, n, p + i, 1);
                i++;
            }
        }
        return n;
    }
    for (int i = 0; i < t->piece_lens[id];) {
        int l;
        uint32_t cp = utf8_decode(p + i, (size_t)(t->piece_lens[id] - i), &l);
        int b = cp_to_byte(t, cp);
        if (b >= 0) {
            char c = (char)b;
            n = put_bytes(buf, cap, n, &c, 1);
        } else {
            n = put_bytes(buf, cap, n, p + i, l);
        }
        i += l;
    }
    return n;
}

/* ---- streaming detokenizer ----------------------------------------------------------- */

static const char replacement[] = "\xef\xbf\xbd";

/* The length of the character that p[0..n) begins when those bytes are a well-formed
 * start of one (Unicode's table 3-7: no overlong forms, surrogates or code points past
 * U+10FFFF, so that the stream's output is always valid UTF-8), else 0. */
static int utf8_valid_start(const uint8_t *p, int n)
{
    int need = p[0] < 0x80 ? 1 : p[0] < 0xc2 ? 0 : p[0] < 0xe0 ? 2 : p[0] < 0xf0 ? 3 : p[0] < 0xf5 ? 4 : 0;
    if (need <= 1 || n < 2) return need;
    uint8_t lo = p[0] == 0xe0 ? 0xa0 : p[0] == 0xf0 ? 0x90 : 0x80;
    uint8_t hi = p[0] == 0xed ? 0x9f : p[0] == 0xf4 ? 0x8f : 0xbf;
    if (p[1] < lo || p[1] > hi) return 0;
    for (int j = 2; j < need && j < n; j++)
        if ((p[j] & 0xc0) != 0x80) return 0;
    return need;
}

/* Bytes of buf[0..n) that form complete characters go to out, each one whole or not at
 * all (a full out drops the rest rather than ending inside a character); an incomplete
 * tail stays in the stream. A byte that cannot start a valid character becomes U+FFFD
 * and the scan resumes at the next byte. */
static int drain_complete(detok_stream *s, const char *buf, int n, char *out, int cap)
{
    const uint8_t *u = (const uint8_t *)buf;
    int w = 0;
    bool full = false;
    s->n_pending = 0;
    for (int i = 0; i < n;) {
        int len = utf8_valid_start(u + i, n - i);
        if (len > n - i) {  /* a valid beginning, cut off by the end of the token */
            s->n_pending = n - i;
            memcpy(s->pending, buf + i, (size_t)(n - i));
            break;
        }
        const char *piece = len ? buf + i : replacement;
        int plen = len ? len : 3;
        if (!full && w + plen <= cap) w = put_bytes(out, cap, w, piece, plen);
        else full = true;
        i += len ? len : 1;
    }
    return w;
}

int detok_stream_push(detok_stream *s, const tokenizer *t, int32_t id, char *out, int cap)
{
    char buf[512];
    int n = s->n_pending;
    memcpy(buf, s->pending, (size_t)n);
    int len = tokenizer_token_bytes(t, id, false, buf + n, (int)sizeof buf - n);
    if (len < 0) len = 0;
    if (len > (int)sizeof buf - n) len = (int)sizeof buf - n;
    s->n_tokens++;
    return drain_complete(s, buf, n + len, out, cap);
}

int detok_stream_flush(detok_stream *s, char *out, int cap)
{
    int w = s->n_pending && cap >= 3 ? put_bytes(out, cap, 0, replacement, 3) : 0;
    s->n_pending = 0;
    return w;
}

/* ---- loading ------------------------------------------------------------------------- */

static int fail(char *err, size_t errsz, const char *msg, const char *key)
{
    snprintf(err, errsz, msg, key);
    return -1;
}

static int32_t id_key(const gguf_file *f, const char *key, int n_vocab)
{
    uint64_t v;
    return gguf_get_u64(f, key, &v) && v < (uint64_t)n_vocab ? (int32_t)v : -1;
}

/* `tokenizer.ggml.pre` names as llama.cpp's llama-vocab.cpp maps them onto the four
 * splitters written here. */
static const struct {
    const char *name;
    enum pre_split pre;
} pre_names[] = {
    {"smollm", PRE_SMOLLM},   {"llama3", PRE_LLAMA3}, {"llama-v3", PRE_LLAMA3},
    {"llama-bpe", PRE_LLAMA3}, {"falcon3", PRE_LLAMA3}, {"qwen2", PRE_QWEN2},
    {"deepseek-r1-qwen", PRE_QWEN2}, {"megrez", PRE_QWEN2}, {"gpt2", PRE_GPT2},
    {"gpt-2", PRE_GPT2},      {"phi-2", PRE_GPT2},    {"mpt", PRE_GPT2},
    {"olmo", PRE_GPT2},
};

static enum pre_split pre_from_name(const gguf_file *f)
{
    gguf_str pre;
    if (!gguf_get_str(f, "tokenizer.ggml.pre", &pre)) return PRE_GPT2;
    for (size_t i = 0; i < sizeof pre_names / sizeof pre_names[0]; i++)
        if (gguf_str_eq(pre, pre_names[i].name)) return pre_names[i].pre;
    if (!gguf_str_eq(pre, "default"))
        fprintf(stderr, "warning: pre-tokenizer '%.*s' is not known; using GPT-2's\n",
                (int)(pre.len > 64 ? 64 : pre.len), pre.ptr);
    return PRE_GPT2;
}

static int load_pieces(tokenizer *t, const gguf_file *f, char *err, size_t errsz)
{
    const gguf_value *tokens = gguf_get_array(f, "tokenizer.ggml.tokens");
    if (tokens == NULL || tokens->v.arr.elem_type != GGUF_TYPE_STRING || tokens->v.arr.n == 0 ||
        tokens->v.arr.n > (1u << 24))
        return fail(err, errsz, "model lacks a usable string array '%s'", "tokenizer.ggml.tokens");
    t->n_vocab = (int)tokens->v.arr.n;
    const gguf_value *scores = gguf_get_array(f, "tokenizer.ggml.scores");
    const gguf_value *types = gguf_get_array(f, "tokenizer.ggml.token_type");
    t->pieces = calloc((size_t)t->n_vocab, sizeof *t->pieces);
    t->piece_lens = calloc((size_t)t->n_vocab, sizeof *t->piece_lens);
    t->scores = calloc((size_t)t->n_vocab, sizeof *t->scores);
    t->kinds = calloc((size_t)t->n_vocab, sizeof *t->kinds);
    t->eog = calloc((size_t)t->n_vocab, sizeof *t->eog);
    if (!t->pieces || !t->piece_lens || !t->scores || !t->kinds || !t->eog ||
        map_init(&t->piece_ids, (size_t)t->n_vocab))
        return fail(err, errsz, "out of memory loading %s", "the vocabulary");
    for (int i = 0; i < t->n_vocab; i++) {
        gguf_str s = tokens->v.arr.strings[i];
        if (s.len > 4096) return fail(err, errsz, "a vocabulary piece in '%s' is too long", "tokenizer.ggml.tokens");
        t->pieces[i] = malloc(s.len + 1);
        if (t->pieces[i] == NULL) return fail(err, errsz, "out of memory loading %s", "the vocabulary");
        memcpy(t->pieces[i], s.ptr, s.len);
        t->pieces[i][s.len] = '\0';
        t->piece_lens[i] = (int)s.len;
        t->scores[i] = scores && (uint64_t)i < scores->v.arr.n ? (float)gguf_array_f64(scores, (uint64_t)i) : 0.0f;
        t->kinds[i] = types && (uint64_t)i < types->v.arr.n ? (int)gguf_array_i64(types, (uint64_t)i) : KIND_NORMAL;
        map_put(&t->piece_ids, t->pieces[i], t->piece_lens[i], i);
    }
    return 0;
}

static int load_merges(tokenizer *t, const gguf_file *f, char *err, size_t errsz)
{
    const gguf_value *merges = gguf_get_array(f, "tokenizer.ggml.merges");
    if (merges == NULL || merges->v.arr.elem_type != GGUF_TYPE_STRING)
        return fail(err, errsz, "BPE model lacks the string array '%s'", "tokenizer.ggml.merges");
    t->n_merges = (int)merges->v.arr.n;
    t->merges = calloc((size_t)t->n_merges + 1, sizeof *t->merges);
    if (t->merges == NULL || map_init(&t->merge_ranks, (size_t)t->n_merges))
        return fail(err, errsz, "out of memory loading %s", "the merges");
    for (int i = 0; i < t->n_merges; i++) {
        gguf_str s = merges->v.arr.strings[i];
        if (s.len > 1024) return fail(err, errsz, "a merge in '%s' is too long", "tokenizer.ggml.merges");
        t->merges[i] = malloc(s.len + 1);
        if (t->merges[i] == NULL) return fail(err, errsz, "out of memory loading %s", "the merges");
        memcpy(t->merges[i], s.ptr, s.len);
        t->merges[i][s.len] = '\0';
        map_put(&t->merge_ranks, t->merges[i], (int)s.len, i);
    }
    return 0;
}

static int compare_by_length(const void *a, const void *b, void *ctx)
{
    const tokenizer *t = ctx;
    return t->piece_lens[*(const int32_t *)b] - t->piece_lens[*(const int32_t *)a];
}

static bool is_end_text(const char *p)
{
    static const char *const ends[] = {"<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "<end_of_turn>",
                                       "<|endoftext|>", "</s>", "<|eom_id|>", "<|end|>"};
    for (size_t i = 0; i < sizeof ends / sizeof ends[0]; i++)
        if (!strcmp(p, ends[i])) return true;
    return false;
}

static int index_specials(tokenizer *t, const gguf_file *f)
{
    t->specials = malloc(sizeof *t->specials * (size_t)t->n_vocab);
    if (t->specials == NULL) return -1;
    for (int i = 0; i < t->n_vocab; i++) {
        if ((t->kinds[i] == KIND_CONTROL || t->kinds[i] == KIND_USER) && t->piece_lens[i] > 0) {
            t->specials[t->n_specials++] = i;
            t->special_first[(uint8_t)t->pieces[i][0]] = true;
        }
        if (t->kinds[i] == KIND_CONTROL && is_end_text(t->pieces[i])) t->eog[i] = true;
    }
    qsort_r(t->specials, (size_t)t->n_specials, sizeof *t->specials, compare_by_length, t);
    t->bos = id_key(f, "tokenizer.ggml.bos_token_id", t->n_vocab);
    t->eos = id_key(f, "tokenizer.ggml.eos_token_id", t->n_vocab);
    t->eot = id_key(f, "tokenizer.ggml.eot_token_id", t->n_vocab);
    t->eom = id_key(f, "tokenizer.ggml.eom_token_id", t->n_vocab);
    t->unk = id_key(f, "tokenizer.ggml.unknown_token_id", t->n_vocab);
    int32_t ends[] = {t->eos, t->eot, t->eom};
    for (size_t i = 0; i < 3; i++)
        if (ends[i] >= 0) t->eog[ends[i]] = true;
    return 0;
}

static void index_bytes(tokenizer *t)
{
    for (int b = 0; b < 256; b++) {
        char piece[8];
        int n;
        if (t->family == FAMILY_SPM)
            n = snprintf(piece, sizeof piece, "<0x%02X>", b);
        else
            n = utf8_encode(t->byte_cp[b], piece);
        t->byte_tokens[b] = map_get(&t->piece_ids, piece, n);
    }
}

int tokenizer_load(tokenizer **out, const gguf_file *f, char *err, size_t errsz)
{
    *out = NULL;
    if (errsz) err[0] = '\0';
    gguf_str model;
    if (!gguf_get_str(f, "tokenizer.ggml.model", &model))
        return fail(err, errsz, "model lacks metadata key '%s'", "tokenizer.ggml.model");
    tokenizer *t = calloc(1, sizeof *t);
    if (t == NULL) return fail(err, errsz, "out of memory loading %s", "the tokenizer");
    if (gguf_str_eq(model, "llama")) {
        t->family = FAMILY_SPM;
    } else if (gguf_str_eq(model, "gpt2")) {
        t->family = FAMILY_BPE;
        t->pre = pre_from_name(f);
        t->ignore_merges = t->pre == PRE_LLAMA3;
    } else {
        snprintf(err, errsz, "tokenizer '%.*s' is not supported (llama and gpt2 are)",
                 (int)(model.len > 64 ? 64 : model.len), model.ptr);
        free(t);
        return -1;
    }
    if (load_pieces(t, f, err, errsz) || (t->family == FAMILY_BPE && load_merges(t, f, err, errsz)) ||
        index_specials(t, f)) {
        if (!err[0]) snprintf(err, errsz, "out of memory loading the tokenizer");
        tokenizer_free(t);
        return -1;
    }
    fill_byte_maps(t);
    index_bytes(t);
    bool v;
    t->add_bos = gguf_get_bool(f, "tokenizer.ggml.add_bos_token", &v) ? v : t->family == FAMILY_SPM;
    t->add_space_prefix = gguf_get_bool(f, "tokenizer.ggml.add_space_prefix", &v) ? v : t->family == FAMILY_SPM;
    *out = t;
    return 0;
}

void tokenizer_free(tokenizer *t)
{
    if (t == NULL) return;
    for (int i = 0; t->pieces && i < t->n_vocab; i++)
        free(t->pieces[i]);
    for (int i = 0; t->merges && i < t->n_merges; i++)
        free(t->merges[i]);
    free(t->pieces);
    free(t->piece_lens);
    free(t->scores);
    free(t->kinds);
    free(t->eog);
    free(t->merges);
    free(t->specials);
    map_free(&t->piece_ids);
    map_free(&t->merge_ranks);
    free(t);
}

/* ---- lookups ------------------------------------------------------------------------- */

const char *tokenizer_piece(const tokenizer *t, int32_t id)
{
    return id >= 0 && id < t->n_vocab ? t->pieces[id] : NULL;
}

int32_t tokenizer_find_piece(const tokenizer *t, const char *piece)
{
    return map_get(&t->piece_ids, piece, (int)strlen(piece));
}

int tokenizer_n_vocab(const tokenizer *t) { return t->n_vocab; }
int32_t tokenizer_bos(const tokenizer *t) { return t->bos; }
int32_t tokenizer_eos(const tokenizer *t) { return t->eos; }
bool tokenizer_adds_bos(const tokenizer *t) { return t->add_bos; }
bool tokenizer_is_eog(const tokenizer *t, int32_t id) { return id >= 0 && id < t->n_vocab && t->eog[id]; }
bool tokenizer_is_control(const tokenizer *t, int32_t id)
{
    return id >= 0 && id < t->n_vocab && t->kinds[id] == KIND_CONTROL;
}
