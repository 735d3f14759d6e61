/* pii.c - the PII and secret detectors and the leftmost-first scan (see pii.h).
 *
 * Every pattern starts with a look-behind boundary, so an attempt inside a run of
 * digits or letters fails on its first test: that keeps the scan linear and lets
 * PCRE2's start-of-match optimisations skip most of a text. Validation callouts are
 * numbered: (?C1) Luhn, (?C2) resident ID, (?C3) IPv6.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "pii.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <emmintrin.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static const char *const type_names[PII_TYPE_COUNT] = {"SECRET", "ID_CARD", "BANK_CARD", "PHONE", "EMAIL", "IP"};
static const char *const placeholders[PII_TYPE_COUNT] = {"[SECRET]", "[ID_CARD]", "[BANK_CARD]",
                                                         "[PHONE]",  "[EMAIL]",   "[IP]"};
static const char *const policy_names[] = {"redact", "block", "log"};

#define OCTET "(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
/* Where PCRE2 is run at all (a prefilter: PCRE2's own start-of-match scan tries every
 * digit or every 's' of a text, and each try costs far more than looking at a byte):
 *   PF_ANCHOR  every match holds `anchor`, whose first occurrence at or after the
 *              match's start is at most `reach` bytes after it: PCRE2 runs only in the
 *              window [anchor - reach, anchor] before each occurrence found with memmem
 *              (start offsets capped with PCRE2's offset limit), and at the end of an
 *              unfinished text, where a match may be waiting for its anchor;
 *   PF_NUMBER  every match is made of digits, spaces, '-', '.' and '+': PCRE2 runs only
 *              on runs of those characters (found in one pass from their digits) that
 *              hold what the pattern needs at least (run_may_hold: 17 digits in a row
 *              for an ID, 13 digits for a card, 11 in a row or '+' and 7 for a phone,
 *              3 dots for IPv4), or that touch the end of an unfinished text. */
enum prefilter { PF_ANCHOR, PF_NUMBER };
static const struct {
    pii_type type;
    const char *pattern;
    enum prefilter prefilter;
    const char *anchor;
    size_t reach;
} patterns[] = {
    {PII_SECRET, "-----BEGIN (?:[A-Z0-9]+ ){0,4}PRIVATE KEY-----[\\s\\S]{0,16384}?-----END (?:[A-Z0-9]+ ){0,4}PRIVATE KEY-----",
     PF_ANCHOR, "-----BEGIN ", 0},
    {PII_SECRET, "(?<![A-Za-z0-9_-])sk-[A-Za-z0-9_-]{20,256}(?![A-Za-z0-9_-])", PF_ANCHOR, "sk-", 0},
    {PII_SECRET, "(?<![A-Z0-9])AKIA[A-Z0-9]{16}(?![A-Z0-9])", PF_ANCHOR, "AKIA", 0},
    {PII_SECRET, "(?<![A-Z0-9])ASIA[A-Z0-9]{16}(?![A-Z0-9])", PF_ANCHOR, "ASIA", 0},
    {PII_SECRET, "(?<![A-Za-z0-9])[Bb]earer[ \\t]+[A-Za-z0-9._~+/-]{16,1024}=*(?![A-Za-z0-9._~+/=-])", PF_ANCHOR, "earer",
     1},
    {PII_ID_CARD, "(?<![0-9A-Za-z])[1-9][0-9]{16}[0-9Xx](?![0-9A-Za-z])(?C2)", PF_NUMBER, NULL, 0},
    {PII_BANK_CARD, "(?<![0-9])[0-9](?:[ -]?[0-9]){12,18}(?![0-9])(?C1)", PF_NUMBER, NULL, 0},
    {PII_PHONE, "(?<![0-9+])(?:\\+[1-9][0-9]{6,14}|1[3-9][0-9]{9})(?![0-9])", PF_NUMBER, NULL, 0},
    {PII_EMAIL, "(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]{1,64}@(?:[A-Za-z0-9-]{1,63}\\.){1,8}[A-Za-z]{2,63}"
                "(?![A-Za-z0-9-])", PF_ANCHOR, "@", 64},
    {PII_IP, "(?<![0-9.])(?:" OCTET "\\.){3}" OCTET "(?![0-9]|\\.[0-9])", PF_NUMBER, NULL, 0},
    {PII_IP, "(?<![0-9A-Za-z:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9]{1,3}(?:\\.[0-9]{1,3}){3}|[0-9A-Fa-f]{0,4})"
             "(?![0-9A-Za-z:]|\\.[0-9])(?C3)", PF_ANCHOR, ":", 4},
};
#define N_PATTERNS (sizeof patterns / sizeof patterns[0])

/* A run of number characters in the text being scanned (PF_NUMBER's prefilter). */
typedef struct number_run {
    size_t start, end;
    unsigned digits, streak, dots;   /* digits, the longest unbroken run of them, dots */
    bool plus;
} number_run;

struct pii_detector {
    pcre2_code *code[N_PATTERNS];
    size_t anchor_len[N_PATTERNS];
    number_run *runs;       /* the current scan's runs that may hold a match, in order */
    size_t n_runs, cap_runs;
    pcre2_match_data *md;
    pcre2_match_context *mctx;
    pcre2_jit_stack *stack;
    size_t lookbehind;
};

const char *pii_type_name(pii_type t) { return (unsigned)t < PII_TYPE_COUNT ? type_names[t] : "?"; }
const char *pii_placeholder(pii_type t) { return (unsigned)t < PII_TYPE_COUNT ? placeholders[t] : "[?]"; }
const char *pii_policy_name(pii_policy p) { return (unsigned)p <= PII_LOG ? policy_names[p] : "?"; }

int pii_policy_parse(const char *name, pii_policy *out)
{
    for (int p = PII_REDACT; p <= PII_LOG; p++)
        if (name && !strcasecmp(name, policy_names[p])) {
            *out = (pii_policy)p;
            return 0;
        }
    return -1;
}

bool pii_luhn_valid(const char *s, size_t n)
{
    int sum = 0, digits = 0;
    for (size_t i = n; i-- > 0;) {
        if (s[i] == ' ' || s[i] == '-') continue;
        if (s[i] < '0' || s[i] > '9') return false;
        int d = s[i] - '0';
        if (digits++ % 2 == 1) d = d * 2 > 9 ? d * 2 - 9 : d * 2;
        sum += d;
    }
    return digits >= 13 && digits <= 19 && sum % 10 == 0;
}

/* A calendar date between 1900-01-01 and today (UTC). */
static bool birth_date_plausible(int y, int m, int d)
{
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (y < 1900 || m < 1 || m > 12 || d < 1) return false;
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (d > days[m - 1] + (m == 2 && leap)) return false;
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    long today = (long)(tm.tm_year + 1900) * 10000 + (tm.tm_mon + 1) * 100 + tm.tm_mday;
    return (long)y * 10000 + m * 100 + d <= today;
}

static int digits_at(const char *s, int n)
{
    int v = 0;
    for (int i = 0; i < n; i++) v = v * 10 + (s[i] - '0');
    return v;
}

bool pii_id_card_valid(const char *s, size_t n)
{
    static const int weight[17] = {7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2};
    static const char check[] = "10X98765432";
    if (n != 18) return false;
    int sum = 0;
    for (int i = 0; i < 17; i++) {
        if (s[i] < '0' || s[i] > '9') return false;
        sum += (s[i] - '0') * weight[i];
    }
    char last = s[17] == 'x' ? 'X' : s[17];
    return last == check[sum % 11] && birth_date_plausible(digits_at(s + 6, 4), digits_at(s + 10, 2), digits_at(s + 12, 2));
}

bool pii_ipv6_valid(const char *s, size_t n)
{
    char tmp[64];
    unsigned char addr[16];
    if (n >= sizeof tmp) return false;
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    int hex = 0;
    for (size_t i = 0; i < n && s[i] != '.'; i++) hex += s[i] != ':';
    return hex >= 4 && inet_pton(AF_INET6, tmp, addr) == 1;
}

/* The callouts: 0 lets the match go on, 1 makes it fail here (PCRE2 backtracks). */
static int on_callout(pcre2_callout_block *cb, void *user)
{
    (void)user;
    const char *s = (const char *)cb->subject + cb->start_match;
    size_t n = cb->current_position - cb->start_match;
    switch (cb->callout_number) {
    case 1: return pii_luhn_valid(s, n) ? 0 : 1;
    case 2: return pii_id_card_valid(s, n) ? 0 : 1;
    case 3: return pii_ipv6_valid(s, n) ? 0 : 1;
    default: return 0;
    }
}

void pii_buf_append(pii_buf *b, const char *s, size_t n)
{
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) cap *= 2;
        char *p = realloc(b->data, cap);
        if (p == NULL) {
            b->oom = true;
            return;
        }
        b->data = p;
        b->cap = cap;
    }
    if (n) memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void pii_buf_free(pii_buf *b)
{
    free(b->data);
    *b = (pii_buf){0};
}

static int compile_one(pii_detector *d, size_t i, char *err, size_t errsz)
{
    int code;
    PCRE2_SIZE at;
    d->code[i] = pcre2_compile((PCRE2_SPTR)patterns[i].pattern, PCRE2_ZERO_TERMINATED, PCRE2_USE_OFFSET_LIMIT, &code,
                              &at, NULL);
    if (d->code[i] == NULL) {
        PCRE2_UCHAR msg[128];
        pcre2_get_error_message(code, msg, sizeof msg);
        snprintf(err, errsz, "pattern %zu (%s) at %zu: %s", i, type_names[patterns[i].type], (size_t)at, (char *)msg);
        return -1;
    }
    pcre2_jit_compile(d->code[i], PCRE2_JIT_COMPLETE | PCRE2_JIT_PARTIAL_HARD);   /* failure: interpreter */
    d->anchor_len[i] = patterns[i].anchor ? strlen(patterns[i].anchor) : 0;
    uint32_t lb = 0;
    pcre2_pattern_info(d->code[i], PCRE2_INFO_MAXLOOKBEHIND, &lb);
    if (lb > d->lookbehind) d->lookbehind = lb;
    return 0;
}

pii_detector *pii_detector_new(char *err, size_t errsz)
{
    pii_detector *d = calloc(1, sizeof *d);
    if (d == NULL) {
        snprintf(err, errsz, "out of memory");
        return NULL;
    }
    for (size_t i = 0; i < N_PATTERNS; i++)
        if (compile_one(d, i, err, errsz)) {
            pii_detector_free(d);
            return NULL;
        }
    d->md = pcre2_match_data_create(4, NULL);
    d->mctx = pcre2_match_context_create(NULL);
    d->stack = pcre2_jit_stack_create(32 * 1024, 1024 * 1024, NULL);
    if (!d->md || !d->mctx || !d->stack) {
        snprintf(err, errsz, "out of memory");
        pii_detector_free(d);
        return NULL;
    }
    pcre2_set_callout(d->mctx, on_callout, NULL);
    pcre2_set_match_limit(d->mctx, 10000000);
    pcre2_jit_stack_assign(d->mctx, NULL, d->stack);
    return d;
}

void pii_detector_free(pii_detector *d)
{
    if (d == NULL) return;
    for (size_t i = 0; i < N_PATTERNS; i++) pcre2_code_free(d->code[i]);
    pcre2_match_data_free(d->md);
    pcre2_match_context_free(d->mctx);
    pcre2_jit_stack_free(d->stack);
    free(d->runs);
    free(d);
}

size_t pii_lookbehind(const pii_detector *d) { return d ? d->lookbehind : 0; }

/* ---- the scan ---------------------------------------------------------------------- */

/* A detector's next match from some position: its earliest start; for PARTIAL, a
 * match starting there may still be growing at the end of the text. */
enum { CAND_STALE, CAND_NONE, CAND_COMPLETE, CAND_PARTIAL };
typedef struct candidate {
    int state;
    size_t start, end;
} candidate;

/* Runs pattern i from `from` with match starts capped at `last_start`. Returns 1 with
 * c set for a match (or a partial one), 0 for none, -1 when PCRE2 failed. */
static int match_window(pii_detector *d, size_t i, const char *buf, size_t len, size_t from, size_t last_start,
                        bool final, candidate *c)
{
    pcre2_set_offset_limit(d->mctx, last_start < len ? last_start : PCRE2_UNSET);
    int rc = pcre2_match(d->code[i], (PCRE2_SPTR)buf, len, from, final ? 0 : PCRE2_PARTIAL_HARD, d->md, d->mctx);
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(d->md);
    if (rc == PCRE2_ERROR_NOMATCH) return 0;
    if (rc == PCRE2_ERROR_PARTIAL) *c = (candidate){CAND_PARTIAL, ov[0], len};
    else if (rc >= 0) *c = (candidate){CAND_COMPLETE, ov[0], ov[1]};
    else return -1;   /* match limit, JIT stack, ...: never let text through unscanned */
    return 1;
}

/* SSE2 (every x86-64 has it): bit i of the result is set where p[i] equals b. */
static unsigned bytes_equal(const char *p, char b)
{
    __m128i v = _mm_loadu_si128((const __m128i *)p);
    return (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8(b)));
}

/* The first occurrence of needle (m >= 1 bytes) in hay[0, n), or NULL. 16 positions at
 * a time: those where both the needle's first and last bytes are in place, then a
 * memcmp; several times faster than memmem for the short, rare needles used here. */
static const char *find_anchor(const char *hay, size_t n, const char *needle, size_t m)
{
    if (m == 1) return memchr(hay, needle[0], n);
    if (n < m) return NULL;
    size_t last = n - m, i = 0;   /* candidate starts are 0..last */
    for (; i + 16 <= last + 1; i += 16) {
        unsigned mask = bytes_equal(hay + i, needle[0]) & bytes_equal(hay + i + m - 1, needle[m - 1]);
        for (; mask; mask &= mask - 1) {
            size_t at = i + (size_t)__builtin_ctz(mask);
            if (!memcmp(hay + at + 1, needle + 1, m - 2)) return hay + at;
        }
    }
    for (; i <= last; i++)
        if (hay[i] == needle[0] && !memcmp(hay + i + 1, needle + 1, m - 1)) return hay + i;
    return NULL;
}

/* Whether the end of an unfinished text, from `start`, can be the beginning of a match
 * of pattern i that has not reached its anchor yet. A cheap necessary test that spares
 * a PCRE2 call on most chunks of a stream: the e-mail's local part and the IPv6
 * address's first group end the text with one of their characters; the literal
 * anchors (and "Bearer") end it with their own beginning. */
static bool may_wait_for_anchor(const pii_detector *d, size_t i, const char *buf, size_t len, size_t start)
{
    unsigned char last = (unsigned char)buf[len - 1];
    const char *anchor = patterns[i].anchor;
    if (anchor[0] == '@') return isalnum(last) || last == '.' || last == '_' || last == '%' || last == '+' || last == '-';
    if (anchor[0] == ':') return isxdigit(last);
    bool bearer = patterns[i].reach > 0;   /* [Bb]earer: the match begins before its anchor */
    const char *head = bearer ? "bearer" : anchor;
    size_t head_len = bearer ? 6 : d->anchor_len[i];
    for (size_t l = 1; l < head_len && l <= len - start; l++) {
        char c = buf[len - l];
        if ((c == head[0] || (bearer && c == 'B')) && !memcmp(buf + len - l + 1, head + 1, l - 1)) return true;
    }
    return false;
}

static int search_anchored(pii_detector *d, size_t i, const char *buf, size_t len, size_t from, bool final,
                           candidate *c)
{
    const char *anchor = patterns[i].anchor;
    size_t alen = d->anchor_len[i], reach = patterns[i].reach, lo = from;
    for (const char *hit; lo < len && (hit = find_anchor(buf + lo, len - lo, anchor, alen)) != NULL;) {
        size_t at = (size_t)(hit - buf), start = at - lo > reach ? at - reach : lo;
        int rc = match_window(d, i, buf, len, start, at, final, c);
        if (rc) return rc;
        lo = at + 1;
    }
    /* No anchor left: a match can only be one still waiting for it at the end. */
    size_t back = reach + alen - 1, start = len - lo > back ? len - back : lo;
    if (final || lo >= len || !may_wait_for_anchor(d, i, buf, len, start)) return 0;
    return match_window(d, i, buf, len, start, len, false, c);
}

/* Whether a run of number characters can hold a match of this type: what each
 * pattern needs at least (PCRE2 then decides). */
static bool run_may_hold(const number_run *r, pii_type t)
{
    switch (t) {
    case PII_ID_CARD: return r->streak >= 17;
    case PII_BANK_CARD: return r->digits >= 13;
    case PII_PHONE: return r->streak >= 11 || (r->plus && r->streak >= 7);
    case PII_IP: return r->dots >= 3 && r->digits >= 4;
    default: return true;
    }
}

static int search_numbers(pii_detector *d, size_t i, const char *buf, size_t len, size_t from, bool final,
                          candidate *c)
{
    size_t lo = 0, hi = d->n_runs;
    while (lo < hi) {   /* the first run ending after `from` */
        size_t mid = (lo + hi) / 2;
        if (d->runs[mid].end <= from) lo = mid + 1;
        else hi = mid;
    }
    for (size_t k = lo; k < d->n_runs; k++) {
        const number_run *r = &d->runs[k];
        if (!run_may_hold(r, patterns[i].type) && (final || r->end < len)) continue;
        int rc = match_window(d, i, buf, len, r->start > from ? r->start : from, r->end - 1, final, c);
        if (rc) return rc;
    }
    return 0;
}

/* A detector's next match from `from`, through its prefilter. */
static int search(pii_detector *d, size_t i, const char *buf, size_t len, size_t from, bool final, candidate *c)
{
    int rc = patterns[i].prefilter == PF_ANCHOR ? search_anchored(d, i, buf, len, from, final, c)
                                                : search_numbers(d, i, buf, len, from, final, c);
    if (rc == 0) c->state = CAND_NONE;
    return rc < 0 ? -1 : 0;
}

static bool is_number_char(unsigned char b) { return (b >= '0' && b <= '9') || b == ' ' || b == '-' || b == '.' || b == '+'; }

/* The first digit in buf[k, len), or len. 16 bytes at a time: text is mostly not digits. */
static size_t next_digit(const char *buf, size_t k, size_t len)
{
    const __m128i zero = _mm_set1_epi8('0'), nine = _mm_set1_epi8(9);
    for (; k + 16 <= len; k += 16) {
        __m128i x = _mm_sub_epi8(_mm_loadu_si128((const __m128i *)(buf + k)), zero);
        unsigned mask = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(_mm_min_epu8(x, nine), x));
        if (mask) return k + (size_t)__builtin_ctz(mask);
    }
    while (k < len && (buf[k] < '0' || buf[k] > '9')) k++;
    return k;
}

static int add_run(pii_detector *d, number_run r)
{
    if (d->n_runs == d->cap_runs) {
        size_t cap = d->cap_runs ? d->cap_runs * 2 : 64;
        number_run *p = realloc(d->runs, cap * sizeof *p);
        if (p == NULL) return -1;
        d->runs = p;
        d->cap_runs = cap;
    }
    d->runs[d->n_runs++] = r;
    return 0;
}

/* PF_NUMBER's runs in buf[start, len): those with 4 digits or more (the fewest any
 * numeric pattern needs), and the one touching the end that may still grow (a '+'
 * alone may become a phone number). Found from their digits, then widened. */
static int find_number_runs(pii_detector *d, const char *buf, size_t len, size_t start)
{
    d->n_runs = 0;
    size_t k = start;
    while ((k = next_digit(buf, k, len)) < len) {
        number_run r = {k, k, 0, 0, 0, false};
        while (r.start > start && is_number_char((unsigned char)buf[r.start - 1])) r.start--;
        for (size_t k0 = r.start; k0 < k; k0++) r.plus |= buf[k0] == '+', r.dots += buf[k0] == '.';
        for (unsigned streak = 0; k < len && is_number_char((unsigned char)buf[k]); k++) {
            bool digit = buf[k] >= '0' && buf[k] <= '9';
            streak = digit ? streak + 1 : 0;
            if (streak > r.streak) r.streak = streak;
            r.digits += digit;
            r.dots += buf[k] == '.';
            r.plus |= buf[k] == '+';
        }
        r.end = k;
        if ((r.digits >= 4 || k == len) && add_run(d, r)) return -1;
    }
    size_t tail = len;   /* a digit-less run at the end holding a '+' */
    while (tail > start && is_number_char((unsigned char)buf[tail - 1])) tail--;
    if (tail < len && (d->n_runs == 0 || d->runs[d->n_runs - 1].end < len) && memchr(buf + tail, '+', len - tail))
        return add_run(d, (number_run){tail, len, 0, 0, 0, true});
    return 0;
}

/* Does a beat b: earlier, then longer, then the type listed first. */
static bool better(const candidate *a, pii_type ta, const candidate *b, pii_type tb)
{
    if (a->start != b->start) return a->start < b->start;
    if (a->end != b->end) return a->end > b->end;
    return ta < tb;
}

/* Where to stop releasing text so that no UTF-8 character is cut in two. */
static size_t utf8_cut(const char *buf, size_t from, size_t to)
{
    for (size_t back = 1; back <= 3 && to - back >= from && to >= back; back++) {
        unsigned char c = (unsigned char)buf[to - back];
        if ((c & 0xC0) == 0x80) continue;              /* continuation: look further back */
        size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
        return need > back ? to - back : to;
    }
    return to;
}

/* Emits the finding at c: placeholder, the original (log), or stops (block). */
static bool take_finding(const pii_policy policy[], pii_type t, const char *buf, const candidate *c, pii_buf *out,
                         unsigned counts[], pii_scan_result *res)
{
    counts[t]++;
    if (policy[t] == PII_BLOCK) {
        res->blocked = true;
        res->block_type = t;
        res->consumed = c->start;
        return false;
    }
    if (policy[t] == PII_LOG) pii_buf_append(out, buf + c->start, c->end - c->start);
    else pii_buf_append(out, placeholders[t], strlen(placeholders[t]));
    return true;
}

int pii_scan(pii_detector *d, const pii_policy policy[PII_TYPE_COUNT], const char *buf, size_t len, size_t start,
             size_t limit, bool final, pii_buf *out, unsigned counts[PII_TYPE_COUNT], pii_scan_result *res)
{
    candidate cand[N_PATTERNS] = {{0}};
    size_t pos = start;
    *res = (pii_scan_result){.consumed = start};
    if (final) limit = len;
    if (find_number_runs(d, buf, len, start)) return -1;
    for (;;) {
        int best = -1;
        size_t partial_at = len;
        for (size_t i = 0; i < N_PATTERNS; i++) {
            candidate *c = &cand[i];
            if (c->state == CAND_STALE || (c->state != CAND_NONE && c->start < pos))
                if (search(d, i, buf, len, pos, final, c)) return -1;
            if (c->state == CAND_PARTIAL && c->start < partial_at) partial_at = c->start;
            if (c->state == CAND_COMPLETE && (best < 0 || better(c, patterns[i].type, &cand[best], patterns[best].type)))
                best = (int)i;
        }
        if (best >= 0 && cand[best].start < partial_at && cand[best].end <= limit) {
            pii_buf_append(out, buf + pos, cand[best].start - pos);
            if (!take_finding(policy, patterns[best].type, buf, &cand[best], out, counts, res)) break;
            pos = cand[best].end;
            continue;
        }
        size_t stop = partial_at < limit ? partial_at : limit;
        if (best >= 0 && cand[best].start < stop) stop = cand[best].start;
        if (stop < pos) stop = pos;
        if (!final) stop = utf8_cut(buf, pos, stop);
        pii_buf_append(out, buf + pos, stop - pos);
        res->consumed = stop;
        break;
    }
    return out->oom ? -1 : 0;
}
