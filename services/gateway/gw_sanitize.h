/* gw_sanitize.h - the gateway's link to citadel-sanitizer (services/sanitizer/): every
 * prompt is sanitized before it goes to the router, every generation's output before it
 * reaches the client. One ZeroMQ DEALER socket on the gateway's libevent loop, next to
 * gw_upstream's socket to the router; SanitizeRequest out, SanitizeResponse (or Error) in.
 *
 * Prompts: each message's content (or the completion prompt) is one whole-text request,
 * all sent at once. When every answer is in, the request's texts are replaced by their
 * redacted forms and the caller goes on; a blocked term refuses the request with 400
 * content_policy, a type whose policy is block with 400 pii_policy naming the types
 * (never the values).
 *
 * Output: a streaming session on the sanitizer (stream_id = the request id). Why the
 * chunks go to the sanitizer service instead of a stream filter inside the gateway: the
 * lists and policies then live in one process, reloaded there on SIGHUP, counted there,
 * and the gateway holds no blocked-term list (DESIGN.md: the sanitizer is its own
 * service). The cost is a loopback round trip per SanitizeRequest (tens of
 * microseconds), which the design keeps off the token path: at most one request per
 * stream is in flight, and text that arrives meanwhile is gathered and sent in the next
 * one, so a slow sanitizer means fewer, larger requests rather than a queue, and the
 * order of a stream's chunks is never in doubt. The sanitizer holds back only what a
 * match may still need (see common/stream_filter.h) and says how much it holds
 * (held_bytes), which places each token's log-probabilities: they go out with the text
 * that covers them, and are withheld where that text had findings (their token strings
 * would show the values).
 *
 * A blocked term in output (or a type whose policy is block) ends the stream with
 * finish_reason "content_filter" after the text before it. If the sanitizer is down,
 * does not answer within the timeout, or answers with an Error: fail closed (prompt:
 * 503; output: an error event, so the stream ends with an error and a non-streamed
 * request gets 503), or with fail_open the text passes unsanitized, logged at error
 * level and counted (citadel_gateway_sanitizer_bypassed_total).
 *
 * Single-threaded, like the loop. A prompt's callback never runs inside
 * gw_sanitize_prompt; an output filter's may run inside gw_output_filter_push (errors,
 * fail-open pass-through), so the caller does nothing after a push.
 */
#ifndef CITADEL_GW_SANITIZE_H
#define CITADEL_GW_SANITIZE_H

#include <stdbool.h>
#include <stddef.h>

#include <event2/event.h>

#include "gw_openai.h"
#include "gw_upstream.h"
#include "sanitize.h"

typedef struct gw_sanitizer gw_sanitizer;

typedef struct gw_sanitize_config {
    const char *endpoint;   /* "tcp://127.0.0.1:5557" */
    int timeout_ms;         /* no answer within this: the sanitizer is unavailable */
    bool fail_open;         /* unavailable: pass text unsanitized instead of failing */
} gw_sanitize_config;

/* What the sanitizer found in one request: counts by kind (sanitize_finding_name:
 * the PII types, then BLOCKED_TERM), never values. This is the request's record for
 * the request log line and the audit trail (an AuditEvent carries these as its
 * findings). */
typedef struct gw_findings {
    unsigned prompt[SANITIZE_FINDING_COUNT];
    unsigned output[SANITIZE_FINDING_COUNT];
    bool bypassed;          /* fail-open let some text through unsanitized */
    double wait_s;          /* time the request waited on the sanitizer: the prompt's
                               answers, and after the router's last chunk the output's */
} gw_findings;

/* Writes "prompt=PHONE:1,EMAIL:2 output=none" (plus " bypassed" when so) to out. */
void gw_findings_format(const gw_findings *f, char *out, size_t cap);

/* Connects (lazily: a sanitizer that is not up yet is fine) and registers with base.
 * Returns NULL with a message. */
gw_sanitizer *gw_sanitizer_new(struct event_base *base, const gw_sanitize_config *cfg, char *err, size_t errsz);
/* Frees it; requests still waiting are dropped without their callbacks. */
void gw_sanitizer_free(gw_sanitizer *z);
/* Whether the sanitizer answered anything in the last 10 s. */
bool gw_sanitizer_seen(const gw_sanitizer *z);

/* ---- prompts ---------------------------------------------------------------------- */

/* Called once per prompt: refusal NULL means go on (req holds the redacted texts),
 * otherwise it is the error to send (400 content_policy or pii_policy, 503). */
typedef void (*gw_prompt_fn)(const gw_error *refusal, void *arg);

/* Sanitizes req's texts in place (they stay req's to free) and counts into f; both
 * must live until fn is called or gw_sanitize_prompt_cancel. Returns 0, or -1 with e
 * set (503, out of memory) and fn never called; the sanitizer's failures and verdicts
 * come through fn. */
int gw_sanitize_prompt(gw_sanitizer *z, gw_request *req, const char *request_id, gw_findings *f, gw_prompt_fn fn,
                       void *arg, gw_error *e);
/* Forgets request_id's prompt: fn is not called. Unknown ids are ignored. */
void gw_sanitize_prompt_cancel(gw_sanitizer *z, const char *request_id);

/* ---- output ----------------------------------------------------------------------- */

typedef struct gw_output_filter gw_output_filter;

/* A filter for one generation's output: each router event goes in through
 * gw_output_filter_push, and sanitized events come out through fn (the same
 * gw_upstream_event shapes: text released so far, its log-probabilities, the
 * finish_reason, "content_filter" when blocked, or an error). After a final event fn
 * is not called again. Counts go to f. NULL when out of memory. */
gw_output_filter *gw_output_filter_new(gw_sanitizer *z, const char *request_id, gw_findings *f, gw_upstream_fn fn,
                                       void *arg);
void gw_output_filter_push(gw_output_filter *o, const gw_upstream_event *ev);
/* Frees it (safe from inside fn); its answer, if one is due, is dropped. NULL-safe. */
void gw_output_filter_free(gw_output_filter *o);

#endif
