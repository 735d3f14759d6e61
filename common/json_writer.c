/* json_writer.c - see json_writer.h. */
#include "json_writer.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Length of the valid UTF-8 sequence at s (at most n bytes), or 0 if invalid. */
static size_t utf8_valid_len(const unsigned char *s, size_t n)
{
    size_t len;
    unsigned min;
    if (s[0] < 0x80) return 1;
    if ((s[0] & 0xE0) == 0xC0) { len = 2; min = 0x80; }
    else if ((s[0] & 0xF0) == 0xE0) { len = 3; min = 0x800; }
    else if ((s[0] & 0xF8) == 0xF0) { len = 4; min = 0x10000; }
    else return 0;
    if (len > n) return 0;
    unsigned cp = s[0] & (0x7F >> len);
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return len;
}

void json_write_string(FILE *out, const char *str, size_t len)
{
    const unsigned char *s = (const unsigned char *)str;
    fputc('"', out);
    for (size_t i = 0; i < len;) {
        unsigned char c = s[i];
        if (c == '"' || c == '\\') { fputc('\\', out); fputc(c, out); i++; }
        else if (c == '\n') { fputs("\\n", out); i++; }
        else if (c == '\r') { fputs("\\r", out); i++; }
        else if (c == '\t') { fputs("\\t", out); i++; }
        else if (c < 0x20 || c == 0x7F) { fprintf(out, "\\u%04x", c); i++; }
        else {
            size_t n = utf8_valid_len(s + i, len - i);
            if (n == 0) { fputs("\\ufffd", out); i++; }
            else { fwrite(s + i, 1, n, out); i += n; }
        }
    }
    fputc('"', out);
}

void json_write_int_array(FILE *out, const int32_t *a, size_t n)
{
    fputc('[', out);
    for (size_t i = 0; i < n; i++)
        fprintf(out, i ? ",%d" : "%d", a[i]);
    fputc(']', out);
}

void json_write_cstring(FILE *out, const char *s)
{
    if (s == NULL)
        fputs("null", out);
    else
        json_write_string(out, s, strlen(s));
}

void json_write_number(FILE *out, double v)
{
    if (!isfinite(v)) {
        fputs("null", out);
        return;
    }
    /* %.15g is exact for the values people write (0.1, 42); fall back to 17 digits,
     * which always round-trips, only when it is not. */
    char buf[32];
    snprintf(buf, sizeof buf, "%.15g", v);
    if (strtod(buf, NULL) != v)
        snprintf(buf, sizeof buf, "%.17g", v);
    fputs(buf, out);
}
