/* json_writer.h - writing JSON values to a stdio stream: strings escaped per RFC 8259
 * (control characters as \uXXXX, invalid UTF-8 replaced by U+FFFD so the output is
 * always valid JSON) and arrays of integers. Used by the CLI's --json output and, later,
 * by the services' logs. Knows nothing of models.
 */
#ifndef CITADEL_JSON_WRITER_H
#define CITADEL_JSON_WRITER_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Writes s[0..len) as a quoted JSON string. */
void json_write_string(FILE *out, const char *s, size_t len);
/* Writes [a0,a1,...]. */
void json_write_int_array(FILE *out, const int32_t *a, size_t n);
/* Writes the NUL-terminated s as a quoted JSON string; NULL is written as null. */
void json_write_cstring(FILE *out, const char *s);
/* Writes v as a JSON number that reads back to the same double; NaN and infinities,
 * which JSON cannot express, are written as null. */
void json_write_number(FILE *out, double v);

#endif
