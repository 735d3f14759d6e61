/* log.h - structured logs: one JSON object a line on stderr, the format every Citadel
 * service writes and every log shipper can parse without rules:
 *
 *   {"ts":"2025-01-31T12:00:00.123Z","level":"info","service":"router",
 *    "request_id":"r-42","msg":"routed to worker w1","attempt":2}
 *
 * ts is UTC with milliseconds; request_id is left out when empty; extra key/values come
 * after msg. Strings are escaped by json_writer.h, so a hostile prompt or invalid UTF-8
 * cannot break a line. Lines below the level filter cost one comparison.
 *
 * Thread-safe: a line is built in memory and written with one write under a mutex, so
 * lines from several threads never interleave. Values registered with log_redact() (the
 * config registers every secret setting) are replaced by "[REDACTED]" wherever they
 * would appear: a secret that slips into a message still never reaches the log.
 */
#ifndef CITADEL_LOG_H
#define CITADEL_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

/* An extra key/value on a line. Build them with the LOG_STR/LOG_INT/LOG_NUM/LOG_BOOL
 * macros; the key should not be one of ts, level, service, request_id, msg. */
typedef enum log_field_kind { LOG_FIELD_STR, LOG_FIELD_INT, LOG_FIELD_NUM, LOG_FIELD_BOOL } log_field_kind;
typedef struct log_field {
    const char *key;
    log_field_kind kind;
    const char *str;    /* LOG_FIELD_STR (NULL is written as null) */
    long long i;        /* LOG_FIELD_INT, LOG_FIELD_BOOL (0 / 1) */
    double num;         /* LOG_FIELD_NUM (NaN and infinities are written as null) */
} log_field;
#define LOG_STR(k, v)  ((log_field){.key = (k), .kind = LOG_FIELD_STR, .str = (v)})
#define LOG_INT(k, v)  ((log_field){.key = (k), .kind = LOG_FIELD_INT, .i = (long long)(v)})
#define LOG_NUM(k, v)  ((log_field){.key = (k), .kind = LOG_FIELD_NUM, .num = (double)(v)})
#define LOG_BOOL(k, v) ((log_field){.key = (k), .kind = LOG_FIELD_BOOL, .i = (v) ? 1 : 0})

/* Names the service on every line ("router"; NULL or "" writes "citadel") and sets the
 * level from CITADEL_LOG_LEVEL when that holds a valid level name (else info). Call
 * once from main before other threads log; the string must outlive the logging. */
void log_init(const char *service);

/* The level filter: lines below it are dropped. log_set_level_name() takes "debug",
 * "info", "warn" (or "warning"), "error", case-insensitive; it returns 0, or -1 and
 * changes nothing for any other name. */
void log_set_level(enum log_level level);
int log_set_level_name(const char *name);
enum log_level log_get_level(void);
bool log_enabled(enum log_level level);
/* "debug", "info", "warn", "error"; "?" for a value outside the enum. */
const char *log_level_name(enum log_level level);

/* Where lines go: stderr by default, another stream for tests (NULL: back to stderr).
 * The stream is not closed by the log. */
void log_set_output(FILE *out);

/* Registers a value that must never appear in a line (an API key, a password): from
 * now on every occurrence in msg, request_id or string fields is written "[REDACTED]".
 * Values shorter than 4 bytes are ignored (they would blank out ordinary words); the
 * value is copied. Returns 0, or -1 when the table (LOG_MAX_REDACT) is full or out of
 * memory. log_clear_redactions() forgets them all (tests). */
#define LOG_MAX_REDACT 32
int log_redact(const char *secret);
void log_clear_redactions(void);

/* Writes one line. request_id may be NULL or "" (left out); fmt is printf's. */
void log_msg(enum log_level level, const char *request_id, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The same with n extra key/values after msg. */
void log_fields(enum log_level level, const char *request_id, const log_field *fields, size_t n,
                const char *fmt, ...) __attribute__((format(printf, 5, 6)));

#endif
