/* aho_corasick.h - a blocked-term matcher: many byte strings found in one pass over a text.
 *
 * The sanitizer (services/sanitizer/, through common/sanitize.h) and `citadel sanitize`
 * use it for blocked-term lists: 10,000 terms cost about what 10 do, because the terms
 * are compiled into one deterministic automaton (a dense transition table over byte
 * classes) and the text is read once, one table lookup a byte.
 *
 * Terms are UTF-8 (or any bytes); matching is case-insensitive for the Latin letters
 * A-Z only (other scripts are compared byte for byte, which is what UTF-8 terms need).
 * Input may be any bytes, malformed UTF-8 included: it is never decoded. A valid UTF-8
 * term can only match at character boundaries of valid UTF-8 text.
 *
 * Word boundaries: where a term begins or ends with an ASCII letter or digit (a "word
 * byte"), the text must not continue the word there: a blocked "ass" is found in
 * "an ass." but not in "class" or "assign", "bad word" in "a bad word!" but not in
 * "bad words". Every other byte is a boundary: spaces, punctuation, and all non-ASCII
 * characters, so terms in Chinese (written without spaces) match anywhere, and so does
 * a Latin term next to Chinese ("用ass的"); the cost is that accented letters also
 * count as boundaries ("café" holds a whole-word "caf").
 *
 * The automaton is immutable once built: any number of threads may scan with it, each
 * with its own ac_state (the position in the automaton, carried across chunks).
 */
#ifndef CITADEL_AHO_CORASICK_H
#define CITADEL_AHO_CORASICK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct ac_automaton ac_automaton;
typedef uint32_t ac_state;
#define AC_START ((ac_state)0)

/* Builds the automaton for n terms (terms[i] of lens[i] bytes; empty terms are
 * skipped). Returns NULL with a message in err when out of memory or when the table
 * would exceed AC_MAX_TABLE_BYTES. */
#define AC_MAX_TABLE_BYTES ((size_t)512 << 20)
ac_automaton *ac_build(const char *const *terms, const size_t *lens, size_t n, char *err, size_t errsz);
/* Reads a term list: UTF-8, one term a line; a trailing CR, blank lines and lines
 * starting with '#' are ignored. Returns NULL with a message in err. */
ac_automaton *ac_load_file(const char *path, char *err, size_t errsz);
void ac_free(ac_automaton *a);

/* How many terms it holds, and the longest one's length in bytes. 0 for NULL. */
size_t ac_term_count(const ac_automaton *a);
size_t ac_max_term_len(const ac_automaton *a);

/* Feeds len bytes to the automaton from *st (AC_START for a new text) and stops at
 * the first term found. Returns true with *end the offset in text just past the term's
 * last byte and *match_len the longest term ending there; a term that ends with a word
 * byte is only known at the next byte (or at ac_finish), so *end may be 0 when it ended
 * with the previous chunk. *st is then the state just after the term, so the caller may
 * continue with text + *end. Returns false when no term is found in these bytes (*st
 * after all of them). NULL a: never matches. */
bool ac_feed(const ac_automaton *a, ac_state *st, const void *text, size_t len, size_t *end, size_t *match_len);
/* The text ends after what was fed: returns true with *match_len when a term ends at
 * its last byte (one that ended with a word byte, waiting for the boundary). */
bool ac_finish(const ac_automaton *a, ac_state *st, size_t *match_len);
/* How many positions of a whole text terms end at (overlapping terms ending at one
 * position count once). */
size_t ac_count(const ac_automaton *a, const void *text, size_t len);
/* The length in bytes of the longest suffix of the text fed so far that may still
 * become a term: the bytes a stream must hold back. */
size_t ac_depth(const ac_automaton *a, ac_state st);

#endif
