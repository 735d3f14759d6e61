/* sanitize.h - one sanitizing policy applied to a whole text: PII detectors (pii.h),
 * a per-type policy and a blocked-term list (aho_corasick.h). The sanitizer service
 * (services/sanitizer/) answers SanitizeRequests with it; `citadel sanitize` runs it
 * from the command line; stream_filter.h applies the same thing chunk by chunk.
 *
 * Result of a text: the text with findings replaced ("[PHONE]" ...), the count of
 * findings per type, and whether the text is blocked. A text is blocked when it holds
 * a blocked term (reason "content_policy" for a prompt, "content_filter" for model
 * output) or findings whose types' policy is block (reason "pii_policy:<TYPE>[,<TYPE>...]",
 * every such type in the text, in pii_type order); a blocked text's result text is empty. Counts and reasons never contain the values.
 *
 * A sanitizer is immutable after sanitizer_new but its detector holds match state:
 * one thread at a time. Reloading is making a new one (old streams keep the old).
 */
#ifndef CITADEL_SANITIZE_H
#define CITADEL_SANITIZE_H

#include <stdbool.h>
#include <stddef.h>

#include "aho_corasick.h"
#include "pii.h"

typedef enum sanitize_direction { SANITIZE_INPUT, SANITIZE_OUTPUT } sanitize_direction;

/* Finding kinds: the PII types, then blocked terms. */
#define SANITIZE_BLOCKED_TERM PII_TYPE_COUNT
#define SANITIZE_FINDING_COUNT (PII_TYPE_COUNT + 1)
/* "PHONE" ... "IP", then "BLOCKED_TERM"; "?" out of range. */
const char *sanitize_finding_name(int kind);

typedef struct sanitizer {
    pii_detector *pii;
    ac_automaton *terms;                 /* NULL: no list */
    pii_policy policy[PII_TYPE_COUNT];
} sanitizer;

/* A sanitizer with these policies (NULL: redact everything) and the term list at
 * terms_path (NULL or "": none). Returns NULL with a message in err. */
sanitizer *sanitizer_new(const pii_policy *policy, const char *terms_path, char *err, size_t errsz);
/* The same, taking ownership of an already built list (freed on failure too). */
sanitizer *sanitizer_new_with_terms(const pii_policy *policy, ac_automaton *terms, char *err, size_t errsz);
void sanitizer_free(sanitizer *s);

typedef struct sanitize_result {
    pii_buf text;                        /* text.data may be NULL for an empty text */
    unsigned counts[SANITIZE_FINDING_COUNT];
    bool blocked;
    char reason[64];                     /* "" unless blocked */
} sanitize_result;

/* Sanitizes len bytes of text (any bytes; NUL allowed). Returns 0, or -1 when out of
 * memory or a pattern failed: treat the text as blocked (fail closed). r is always
 * initialised: sanitize_result_free it. */
int sanitize_text(sanitizer *s, sanitize_direction dir, const char *text, size_t len, sanitize_result *r);
void sanitize_result_free(sanitize_result *r);

/* The reason for a blocked term in this direction; a blocking PII type's reason. */
const char *sanitize_term_reason(sanitize_direction dir);
void sanitize_set_pii_reason(sanitize_result *r, pii_type t);
/* "pii_policy:" and every type whose policy is block and whose count is not 0. */
void sanitize_set_pii_reasons(sanitize_result *r, const pii_policy policy[PII_TYPE_COUNT]);

/* Writes {"text": ..., "findings": [{"type": ..., "count": ...}...], "blocked": b}
 * (findings with a zero count left out; "reason" added when blocked) to out. */
#include <stdio.h>
void sanitize_result_write_json(const sanitize_result *r, FILE *out);

#endif
