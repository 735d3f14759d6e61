/* pii.h - detecting personal data and secrets in text, and replacing them with typed
 * placeholders: the core of the sanitizer (services/sanitizer/), of `citadel sanitize`
 * and of the stream filter (stream_filter.h). It knows nothing of sockets or models.
 *
 * One PCRE2 pattern (JIT-compiled, byte mode: input is never decoded, so malformed
 * UTF-8 is just bytes) per detector; checks a pattern cannot express (the Luhn sum of a
 * card, the MOD 11-2 check digit and birth date of a PRC resident ID, an IPv6 address's
 * syntax) run as PCRE2 callouts, so a number that fails them is not a match and the
 * pattern backtracks as if it had never matched:
 *
 *   PHONE      mainland China mobile 1[3-9]+9 digits, E.164 +CC... (7-15 digits)
 *   ID_CARD    18 characters, birth date plausible, ISO 7064 MOD 11-2 check digit
 *   EMAIL      local@domain.tld
 *   BANK_CARD  13-19 digits, single spaces or dashes allowed between them, Luhn
 *   IP         IPv4 (octets 0-255) and IPv6 (as inet_pton accepts, 4+ hex digits)
 *   SECRET     PEM private-key blocks, sk-... API keys, AWS AKIA/ASIA ids, Bearer tokens
 * All of them require a boundary (no digit, letter or the like) on both sides.
 *
 * The scan is leftmost-first across detectors: from a position, the finding that
 * starts first wins (then the longest, then the type listed first above), the text
 * resumes after it. Because that rule restarts cleanly from any position, a stream can
 * run the same scan chunk by chunk (PCRE2's hard partial matching tells where a match
 * may still be growing) and produce exactly the one-shot result.
 *
 * A pii_detector holds match state: one thread at a time uses it.
 */
#ifndef CITADEL_PII_H
#define CITADEL_PII_H

#include <stdbool.h>
#include <stddef.h>

/* In order of precedence when two findings start at the same place and are equally long. */
typedef enum pii_type { PII_SECRET, PII_ID_CARD, PII_BANK_CARD, PII_PHONE, PII_EMAIL, PII_IP, PII_TYPE_COUNT } pii_type;

/* What to do with a finding: replace it by its placeholder, refuse the whole text, or
 * leave it and only count it. */
typedef enum pii_policy { PII_REDACT, PII_BLOCK, PII_LOG } pii_policy;

/* "PHONE", "ID_CARD", ...; "?" out of range. */
const char *pii_type_name(pii_type t);
/* "[PHONE]", ...; "[?]" out of range. */
const char *pii_placeholder(pii_type t);
/* "redact", "block", "log". */
const char *pii_policy_name(pii_policy p);
/* Parses one of those names (case-insensitive); returns 0, or -1 leaving *out alone. */
int pii_policy_parse(const char *name, pii_policy *out);

/* The checks, exposed for tests: s is the candidate's n bytes. */
bool pii_luhn_valid(const char *s, size_t n);        /* digits, spaces and dashes */
bool pii_id_card_valid(const char *s, size_t n);     /* 18 chars, date and check digit */
bool pii_ipv6_valid(const char *s, size_t n);

/* A growable output buffer; oom is set (and appends ignored) once memory ran out. */
typedef struct pii_buf {
    char *data;      /* NUL-terminated when non-NULL */
    size_t len, cap;
    bool oom;
} pii_buf;
void pii_buf_append(pii_buf *b, const char *s, size_t n);
void pii_buf_free(pii_buf *b);

typedef struct pii_detector pii_detector;

/* Compiles every pattern. Returns NULL with a message in err (no JIT is not an error:
 * PCRE2's interpreter is used). */
pii_detector *pii_detector_new(char *err, size_t errsz);
void pii_detector_free(pii_detector *d);
/* The most bytes before a scan's start that a pattern's look-behind may examine: what
 * a stream keeps of the text it already released. */
size_t pii_lookbehind(const pii_detector *d);

/* What pii_scan did. */
typedef struct pii_scan_result {
    size_t consumed;        /* input offset up to which output was written */
    bool blocked;           /* a finding whose policy is PII_BLOCK stopped the scan */
    pii_type block_type;    /* its type */
} pii_scan_result;

/* Scans buf[start, len) (buf[0, start) is context that look-behinds may see) and
 * appends to out the text with findings replaced as policy[] says, counting findings
 * per type into counts[]. With final, the text ends at len and everything is
 * consumed. Without it more text may follow: the scan stops where a match may still
 * be growing, and never consumes beyond limit (<= len) nor writes half a UTF-8
 * character at its end; the caller keeps buf[consumed, len) for next time. A
 * blocking finding stops the scan before it (consumed is its start). Returns 0, or -1
 * when out of memory or PCRE2 failed (a match limit): the caller must fail closed. */
int pii_scan(pii_detector *d, const pii_policy policy[PII_TYPE_COUNT], const char *buf, size_t len, size_t start,
             size_t limit, bool final, pii_buf *out, unsigned counts[PII_TYPE_COUNT], pii_scan_result *res);

#endif
