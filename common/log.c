/* log.c - one-JSON-object-a-line logging (see log.h). */
#include "log.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "json_writer.h"

/* The logger's whole state. `level` is atomic because every call reads it before
 * deciding to take the lock; everything else is used under `lock`, which also keeps
 * lines whole. */
static struct {
    pthread_mutex_t lock;
    const char *service;
    _Atomic int level;
    FILE *out;                          /* NULL: stderr */
    char *redact[LOG_MAX_REDACT];       /* values never to write */
    size_t redact_len[LOG_MAX_REDACT];
    int n_redact;
} logger = {PTHREAD_MUTEX_INITIALIZER, "citadel", LOG_INFO, NULL, {0}, {0}, 0};

static const char *const level_names[] = {"debug", "info", "warn", "error"};

const char *log_level_name(enum log_level level)
{
    return (unsigned)level < 4 ? level_names[level] : "?";
}

void log_set_level(enum log_level level)
{
    if ((unsigned)level < 4)
        logger.level = (int)level;
}

int log_set_level_name(const char *name)
{
    if (name == NULL)
        return -1;
    if (strcasecmp(name, "warning") == 0)
        name = "warn";
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(name, level_names[i]) == 0) {
            logger.level = i;
            return 0;
        }
    }
    return -1;
}

enum log_level log_get_level(void) { return (enum log_level)logger.level; }

bool log_enabled(enum log_level level) { return (int)level >= logger.level; }

void log_init(const char *service)
{
    logger.service = service && *service ? service : "citadel";
    logger.level = LOG_INFO;
    log_set_level_name(getenv("CITADEL_LOG_LEVEL"));
}

void log_set_output(FILE *out)
{
    pthread_mutex_lock(&logger.lock);
    logger.out = out;
    pthread_mutex_unlock(&logger.lock);
}

int log_redact(const char *secret)
{
    size_t len = secret ? strlen(secret) : 0;
    if (len < 4)
        return 0;
    int rc = -1;
    pthread_mutex_lock(&logger.lock);
    char *copy = logger.n_redact < LOG_MAX_REDACT ? strdup(secret) : NULL;
    if (copy) {
        logger.redact[logger.n_redact] = copy;
        logger.redact_len[logger.n_redact++] = len;
        rc = 0;
    }
    pthread_mutex_unlock(&logger.lock);
    return rc;
}

void log_clear_redactions(void)
{
    pthread_mutex_lock(&logger.lock);
    for (int i = 0; i < logger.n_redact; i++)
        free(logger.redact[i]);
    logger.n_redact = 0;
    pthread_mutex_unlock(&logger.lock);
}

/* Length of the redacted value starting at s (n bytes left), or 0. Caller holds the lock. */
static size_t redacted_at(const char *s, size_t n)
{
    for (int k = 0; k < logger.n_redact; k++)
        if (logger.redact_len[k] <= n && memcmp(s, logger.redact[k], logger.redact_len[k]) == 0)
            return logger.redact_len[k];
    return 0;
}

/* Writes s as a JSON string with redacted values replaced. The common case, nothing
 * to redact, writes s as it is; otherwise a copy is made (a malloc failure writes a
 * placeholder rather than risk the secret). Caller holds the lock. */
static void write_string(FILE *f, const char *s)
{
    if (s == NULL) {
        fputs("null", f);
        return;
    }
    size_t len = strlen(s), i = 0;
    while (i < len && redacted_at(s + i, len - i) == 0)
        i++;
    if (i == len) {
        json_write_string(f, s, len);
        return;
    }
    char *buf = NULL;
    size_t buf_len = 0;
    FILE *m = open_memstream(&buf, &buf_len);
    if (m == NULL) {
        fputs("\"[REDACTED]\"", f);
        return;
    }
    for (i = 0; i < len;) {
        size_t r = redacted_at(s + i, len - i);
        if (r) { fputs("[REDACTED]", m); i += r; }
        else { fputc(s[i], m); i++; }
    }
    fclose(m);
    json_write_string(f, buf, buf_len);
    free(buf);
}

/* "2025-01-31T12:00:00.123Z" */
static void write_timestamp(FILE *f)
{
    struct timespec ts;
    struct tm tm;
    char date[32];
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%S", &tm);
    fprintf(f, "\"%s.%03ldZ\"", date, ts.tv_nsec / 1000000);
}

static void write_field(FILE *f, const log_field *fd)
{
    fputc(',', f);
    json_write_cstring(f, fd->key ? fd->key : "?");
    fputc(':', f);
    switch (fd->kind) {
    case LOG_FIELD_STR: write_string(f, fd->str); break;
    case LOG_FIELD_INT: fprintf(f, "%lld", fd->i); break;
    case LOG_FIELD_NUM: json_write_number(f, fd->num); break;
    case LOG_FIELD_BOOL: fputs(fd->i ? "true" : "false", f); break;
    default: fputs("null", f); break;
    }
}

/* The whole line into f. Caller holds the lock. */
static void write_line(FILE *f, enum log_level level, const char *request_id, const char *msg,
                       const log_field *fields, size_t n)
{
    fputs("{\"ts\":", f);
    write_timestamp(f);
    fprintf(f, ",\"level\":\"%s\",\"service\":", log_level_name(level));
    json_write_cstring(f, logger.service);
    if (request_id && *request_id) {
        fputs(",\"request_id\":", f);
        write_string(f, request_id);
    }
    fputs(",\"msg\":", f);
    write_string(f, msg);
    for (size_t i = 0; i < n; i++)
        write_field(f, &fields[i]);
    fputs("}\n", f);
}

/* Formats the message (on the stack when it fits), builds the line in memory and
 * writes it at once, so that concurrent writers to the same file interleave whole
 * lines only. */
static void emit(enum log_level level, const char *request_id, const log_field *fields, size_t n,
                 const char *fmt, va_list ap)
{
    char small[512], *msg = small;
    small[0] = '\0';
    va_list ap2;
    va_copy(ap2, ap);
    int len = vsnprintf(small, sizeof small, fmt, ap);
    if (len >= (int)sizeof small && (msg = malloc((size_t)len + 1)) != NULL)
        vsnprintf(msg, (size_t)len + 1, fmt, ap2);
    va_end(ap2);
    if (msg == NULL || len < 0)
        msg = small;   /* truncated, or the format failed: log what we have */

    pthread_mutex_lock(&logger.lock);
    FILE *out = logger.out ? logger.out : stderr;
    char *line = NULL;
    size_t line_len = 0;
    FILE *m = open_memstream(&line, &line_len);
    write_line(m ? m : out, level, request_id, msg, fields, n);
    if (m) {
        fclose(m);
        fwrite(line, 1, line_len, out);
    }
    fflush(out);
    pthread_mutex_unlock(&logger.lock);
    free(line);
    if (msg != small)
        free(msg);
}

void log_msg(enum log_level level, const char *request_id, const char *fmt, ...)
{
    if (!log_enabled(level))
        return;
    va_list ap;
    va_start(ap, fmt);
    emit(level, request_id, NULL, 0, fmt, ap);
    va_end(ap);
}

void log_fields(enum log_level level, const char *request_id, const log_field *fields, size_t n,
                const char *fmt, ...)
{
    if (!log_enabled(level))
        return;
    va_list ap;
    va_start(ap, fmt);
    emit(level, request_id, fields, n, fmt, ap);
    va_end(ap);
}
