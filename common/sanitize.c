/* sanitize.c - a policy, a detector and a term list applied to one whole text (see
 * sanitize.h). The term list is checked first because a blocked text needs no
 * redaction; the PII scan runs in final mode over the whole text. */
#include "sanitize.h"

#include <stdlib.h>
#include <string.h>

#include "json_writer.h"

const char *sanitize_finding_name(int kind)
{
    if (kind == SANITIZE_BLOCKED_TERM) return "BLOCKED_TERM";
    return kind >= 0 && kind < PII_TYPE_COUNT ? pii_type_name((pii_type)kind) : "?";
}

sanitizer *sanitizer_new_with_terms(const pii_policy *policy, ac_automaton *terms, char *err, size_t errsz)
{
    sanitizer *s = calloc(1, sizeof *s);
    if (s == NULL) {
        snprintf(err, errsz, "out of memory");
        ac_free(terms);
        return NULL;
    }
    s->terms = terms;
    for (int t = 0; t < PII_TYPE_COUNT; t++) s->policy[t] = policy ? policy[t] : PII_REDACT;
    s->pii = pii_detector_new(err, errsz);
    if (s->pii == NULL) {
        sanitizer_free(s);
        return NULL;
    }
    return s;
}

sanitizer *sanitizer_new(const pii_policy *policy, const char *terms_path, char *err, size_t errsz)
{
    ac_automaton *terms = NULL;
    if (terms_path && *terms_path && (terms = ac_load_file(terms_path, err, errsz)) == NULL) return NULL;
    return sanitizer_new_with_terms(policy, terms, err, errsz);
}

void sanitizer_free(sanitizer *s)
{
    if (s == NULL) return;
    pii_detector_free(s->pii);
    ac_free(s->terms);
    free(s);
}

const char *sanitize_term_reason(sanitize_direction dir)
{
    return dir == SANITIZE_OUTPUT ? "content_filter" : "content_policy";
}

void sanitize_set_pii_reason(sanitize_result *r, pii_type t)
{
    snprintf(r->reason, sizeof r->reason, "pii_policy:%s", pii_type_name(t));
}

void sanitize_set_pii_reasons(sanitize_result *r, const pii_policy policy[PII_TYPE_COUNT])
{
    int n = snprintf(r->reason, sizeof r->reason, "pii_policy:");
    const char *sep = "";
    for (int t = 0; t < PII_TYPE_COUNT; t++) {
        if (policy[t] != PII_BLOCK || r->counts[t] == 0) continue;
        n += snprintf(r->reason + n, sizeof r->reason - (size_t)n, "%s%s", sep, pii_type_name((pii_type)t));
        sep = ",";
    }
}

/* A text blocked by a PII policy: the scan stopped at the first blocking finding, so
 * it is counted again to the end (nothing is written), which names every blocking type
 * in the reason and gives the audit trail the whole text's counts. */
static int count_all_findings(sanitizer *s, const char *text, size_t len, sanitize_result *r)
{
    static const pii_policy log_only[PII_TYPE_COUNT] = {PII_LOG, PII_LOG, PII_LOG, PII_LOG, PII_LOG, PII_LOG};
    pii_buf scratch = {0};
    pii_scan_result res;
    memset(r->counts, 0, sizeof(unsigned) * PII_TYPE_COUNT);
    int rc = pii_scan(s->pii, log_only, text, len, 0, len, true, &scratch, r->counts, &res);
    pii_buf_free(&scratch);
    return rc;
}

/* A blocked text shows nothing of itself. */
static void block(sanitize_result *r, const char *reason)
{
    r->blocked = true;
    if (reason) snprintf(r->reason, sizeof r->reason, "%s", reason);
    pii_buf_free(&r->text);
}

int sanitize_text(sanitizer *s, sanitize_direction dir, const char *text, size_t len, sanitize_result *r)
{
    *r = (sanitize_result){0};
    size_t hits = ac_count(s->terms, text, len);
    if (hits > 0) {
        r->counts[SANITIZE_BLOCKED_TERM] = (unsigned)hits;
        block(r, sanitize_term_reason(dir));
        return 0;
    }
    pii_scan_result res;
    if (pii_scan(s->pii, s->policy, text, len, 0, len, true, &r->text, r->counts, &res)) {
        block(r, "sanitizer_error");
        return -1;
    }
    if (res.blocked) {
        if (count_all_findings(s, text, len, r)) {
            block(r, "sanitizer_error");
            return -1;
        }
        sanitize_set_pii_reasons(r, s->policy);
        block(r, NULL);
    }
    return 0;
}

void sanitize_result_free(sanitize_result *r) { pii_buf_free(&r->text); }

void sanitize_result_write_json(const sanitize_result *r, FILE *out)
{
    fputs("{\"text\":", out);
    json_write_string(out, r->text.data ? r->text.data : "", r->text.len);
    fputs(",\"findings\":[", out);
    bool first = true;
    for (int k = 0; k < SANITIZE_FINDING_COUNT; k++) {
        if (r->counts[k] == 0) continue;
        fprintf(out, "%s{\"type\":\"%s\",\"count\":%u}", first ? "" : ",", sanitize_finding_name(k), r->counts[k]);
        first = false;
    }
    fprintf(out, "],\"blocked\":%s", r->blocked ? "true" : "false");
    if (r->blocked) {
        fputs(",\"reason\":", out);
        json_write_string(out, r->reason, strlen(r->reason));
    }
    fputs("}", out);
}
