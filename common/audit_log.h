/* audit_log.h - the audit trail on disk: JSON lines in daily segment files, each record
 * carrying the SHA-256 of the one before it (a hash chain), so that editing, removing or
 * reordering any record breaks the chain at that record. citadel-audit writes it
 * (audit_log_open/append/sync); `citadel audit verify` and `query` read it.
 *
 * Layout of a directory (CITADEL_HOME/audit by default):
 *   audit-YYYY-MM-DD.jsonl   one segment per UTC day of writing, records in chain order
 *   chain-start.json         after retention removed old segments: where the chain now
 *                            starts ({"seq":N,"prev":"<hash of record N-1>",...})
 *
 * One record, one line (fields in this order; <fields> is the event's own members):
 *   {"seq":N,"prev":"<64 hex>",<fields>,"kafka":{"partition":P,"offset":O},"hash":"<64 hex>"}
 * hash = SHA-256 of the line's bytes before ,"hash": (which include prev, so each hash
 * covers the whole chain up to its record). seq counts from 1; the first record's prev
 * is 64 zeros. The kafka member says which message the record came from: a writer that
 * restarts skips messages it already wrote (Kafka redelivers what was not committed).
 *
 * A hash chain proves the order and content of what it holds; it cannot by itself show
 * that records were cut off the end, or that the whole chain was rewritten: compare
 * verify's head (last seq and hash) with a copy kept elsewhere for that.
 */
#ifndef CITADEL_AUDIT_LOG_H
#define CITADEL_AUDIT_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define AUDIT_HASH_HEX 64
#define AUDIT_MAX_PARTITIONS 64
#define AUDIT_PATH_MAX 1024
#define AUDIT_ANCHOR_FILE "chain-start.json"

/* The writer's state: the open segment and the chain's head. */
typedef struct audit_log {
    char dir[AUDIT_PATH_MAX];
    int fd;                                  /* the open segment, -1 when none */
    char day[11];                            /* its UTC day, "YYYY-MM-DD" */
    bool dir_dirty;                          /* a segment was created since the last sync */
    uint64_t seq;                            /* the last record's seq (0: none yet) */
    char head[AUDIT_HASH_HEX + 1];           /* the last record's hash (64 zeros: none) */
    int64_t last_offset[AUDIT_MAX_PARTITIONS];  /* per Kafka partition, the last written (-1 none) */
    uint64_t unsynced;                       /* records appended since the last sync */
} audit_log;

/* Opens the log in dir (created, 0750, if missing) and finds the chain's head: the
 * last record of the newest segment that has one, or the anchor after retention. A
 * last line cut short by a crash (never synced, so never committed to Kafka) is
 * truncated away. Returns 0, or -1 with a message. */
int audit_log_open(audit_log *l, const char *dir, char *err, size_t errsz);

/* Whether the record of this Kafka message is already in the log (a redelivery). */
bool audit_log_has(const audit_log *l, int partition, int64_t offset);

/* Appends one record to the segment of now's UTC day (opening a new segment when the
 * day changed). fields are the event's JSON object members, without braces, not
 * empty. Not durable until audit_log_sync. Returns 0, or -1 with a message (then
 * nothing was appended). */
int audit_log_append(audit_log *l, const char *fields, size_t fields_len, time_t now, int partition,
                     int64_t offset, char *err, size_t errsz);

/* fsyncs the segment (and the directory when a segment was created). Returns 0 or -1. */
int audit_log_sync(audit_log *l, char *err, size_t errsz);

void audit_log_close(audit_log *l);

/* ---- reading ---------------------------------------------------------------------- */

/* The segment file names in dir, oldest first (malloc'd array of malloc'd names; free
 * with audit_log_free_names). Returns how many, or -1 when dir cannot be read. */
int audit_log_segments(const char *dir, char ***names);
void audit_log_free_names(char **names, int n);

typedef struct audit_verify_result {
    uint64_t records;
    int segments;
    uint64_t first_seq, last_seq;
    char head[AUDIT_HASH_HEX + 1];           /* the last record's hash */
    char problem[1400];                      /* the first break: file, line, seq, what */
} audit_verify_result;

/* Checks every record of every segment in order: each hash against its content, each
 * seq one more than the last, each prev equal to the hash before it, and the first
 * record against genesis or the anchor. Returns 0 (intact), 1 (broken: r->problem names
 * the first record where it breaks), or -1 (unreadable: r->problem says why). */
int audit_log_verify(const char *dir, audit_verify_result *r);

/* Retention: removes segments of days before now - days (never the newest segment,
 * which holds the chain's head), first writing the anchor so that the chain starts at
 * the first record kept. Returns how many segments were removed, or -1 with a message. */
int audit_log_apply_retention(const char *dir, time_t now, int days, char *err, size_t errsz);

/* The UTC day of t as "YYYY-MM-DD" into out[11]. */
void audit_log_day(time_t t, char out[11]);

#endif
