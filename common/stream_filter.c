/* stream_filter.c - the chunked form of sanitize_text (see stream_filter.h).
 *
 * The buffer is [context | pending]: context is the tail of text already released,
 * kept only so the patterns' look-behinds see what preceded the pending text; pending
 * is what was received and not yet released. Each push appends the chunk, advances
 * the term automaton over the new bytes only (its state carries the boundary), then
 * runs pii_scan over pending, limited so the automaton's live prefix stays held.
 */
#include "stream_filter.h"

#include <stdlib.h>
#include <string.h>

struct stream_filter {
    sanitizer *s;
    sanitize_direction dir;
    char *buf;
    size_t ctx_len, len, cap;   /* buf[0, ctx_len) context, buf[ctx_len, len) pending */
    ac_state ac;
    bool done;
};

stream_filter *stream_filter_new(sanitizer *s, sanitize_direction dir)
{
    stream_filter *f = calloc(1, sizeof *f);
    if (f) {
        f->s = s;
        f->dir = dir;
    }
    return f;
}

void stream_filter_free(stream_filter *f)
{
    if (f == NULL) return;
    free(f->buf);
    free(f);
}

size_t stream_filter_held(const stream_filter *f) { return f->len - f->ctx_len; }
bool stream_filter_done(const stream_filter *f) { return f->done; }

static int append(stream_filter *f, const char *chunk, size_t len)
{
    if (f->len + len > f->cap) {
        size_t cap = f->cap ? f->cap : 1024;
        while (cap < f->len + len) cap *= 2;
        char *p = realloc(f->buf, cap);
        if (p == NULL) return -1;
        f->buf = p;
        f->cap = cap;
    }
    if (len) memcpy(f->buf + f->len, chunk, len);
    f->len += len;
    return 0;
}

/* Drops what was released except the look-behind context. */
static void compact(stream_filter *f, size_t consumed)
{
    size_t keep = pii_lookbehind(f->s->pii);
    size_t from = consumed > keep ? consumed - keep : 0;
    if (from) memmove(f->buf, f->buf + from, f->len - from);
    f->len -= from;
    f->ctx_len = consumed - from;
}

static void end_blocked(stream_filter *f, sanitize_result *r, const char *reason)
{
    r->blocked = true;
    snprintf(r->reason, sizeof r->reason, "%s", reason);
    f->done = true;
}

int stream_filter_push(stream_filter *f, const char *chunk, size_t len, bool final, sanitize_result *r)
{
    *r = (sanitize_result){0};
    if (f->done) return 0;
    size_t old_len = f->len;
    if (append(f, chunk, len)) {
        end_blocked(f, r, "sanitizer_error");
        return -1;
    }
    size_t end = 0, mlen = 0;
    bool used = ac_feed(f->s->terms, &f->ac, f->buf + old_len, len, &end, &mlen);
    if (!used && final && ac_finish(f->s->terms, &f->ac, &mlen)) used = true, end = len;
    size_t term_at = used ? old_len + end - mlen : 0;
    size_t limit = used ? term_at : final ? f->len : f->len - ac_depth(f->s->terms, f->ac);
    pii_scan_result res;
    if (pii_scan(f->s->pii, f->s->policy, f->buf, f->len, f->ctx_len, limit, final && !used, &r->text, r->counts,
                 &res)) {
        end_blocked(f, r, "sanitizer_error");
        return -1;
    }
    if (used) {
        r->counts[SANITIZE_BLOCKED_TERM]++;
        end_blocked(f, r, sanitize_term_reason(f->dir));
    } else if (res.blocked) {
        sanitize_set_pii_reason(r, res.block_type);
        f->done = true;
        r->blocked = true;
    } else {
        compact(f, res.consumed);
        f->done = final;
    }
    return 0;
}
