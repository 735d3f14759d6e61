/* stream_filter.h - sanitizing text that arrives in chunks (model output streamed to a
 * client) without letting anything slip through a chunk boundary.
 *
 * Each push releases the text that can no longer change: it holds back only the tail
 * where a PII match may still be growing (PCRE2 hard partial matching finds its start)
 * or where a blocked term may still complete (the Aho-Corasick state's depth), and
 * never half a UTF-8 character. When nothing is blocked, the concatenation of what
 * every push released equals sanitize_text() of the concatenated chunks; the counts
 * add up the same way. A blocked term (or a blocking PII type) ends the stream: the
 * push that finds it releases only the text before it and sets blocked; later pushes
 * release nothing.
 *
 * The filter borrows its sanitizer, which must outlive it (a reload makes a new
 * sanitizer; streams in flight finish on the old one).
 */
#ifndef CITADEL_STREAM_FILTER_H
#define CITADEL_STREAM_FILTER_H

#include <stdbool.h>
#include <stddef.h>

#include "sanitize.h"

typedef struct stream_filter stream_filter;

/* A filter for one stream. Returns NULL when out of memory. */
stream_filter *stream_filter_new(sanitizer *s, sanitize_direction dir);
void stream_filter_free(stream_filter *f);

/* Adds len bytes; final says no more will come (everything held is released). r gets
 * the text released by this push and the findings in it; blocked and reason once the
 * stream is blocked. Returns 0, or -1 on out of memory or a pattern failure: the
 * stream must then be ended as blocked (r->blocked is set). r is always initialised. */
int stream_filter_push(stream_filter *f, const char *chunk, size_t len, bool final, sanitize_result *r);
/* Bytes received but not released yet. */
size_t stream_filter_held(const stream_filter *f);
/* Blocked or finished: pushes release nothing more. */
bool stream_filter_done(const stream_filter *f);

#endif
