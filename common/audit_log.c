/* audit_log.c - the hash-chained audit log's writer, verifier and retention (see
 * audit_log.h for the format). Plain POSIX files; SHA-256 from OpenSSL. Segments are
 * read line by line with getline, never whole, so a day of millions of records costs
 * one line of memory.
 */
#include "audit_log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

static const char ZERO_HASH[AUDIT_HASH_HEX + 1] = "0000000000000000000000000000000000000000000000000000000000000000";
#define HASH_MEMBER ",\"hash\":\""
#define KAFKA_MEMBER ",\"kafka\":{\"partition\":"

void audit_log_day(time_t t, char out[11])
{
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 11, "%Y-%m-%d", &tm);
}

static void sha256_hex(const void *data, size_t len, char out[AUDIT_HASH_HEX + 1])
{
    unsigned char md[32];
    unsigned int n = 0;
    EVP_Digest(data, len, md, &n, EVP_sha256(), NULL);
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

static bool is_hex64(const char *s)
{
    for (int i = 0; i < AUDIT_HASH_HEX; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

/* One record's chain members, read from its line (without the newline). */
typedef struct record {
    uint64_t seq;
    char prev[AUDIT_HASH_HEX + 1], hash[AUDIT_HASH_HEX + 1];
    size_t hashed_len;          /* bytes covered by hash: the line up to ,"hash": */
    int partition;
    int64_t offset;             /* -1 when the record names no Kafka message */
} record;

/* Parses the fixed frame of a record. Returns 0, or -1 when the line is not one. */
static int parse_record(const char *line, size_t len, record *r)
{
    static const char head[] = "{\"seq\":";
    size_t tail = strlen(HASH_MEMBER) + AUDIT_HASH_HEX + 2;   /* ,"hash":"<hex>"} */
    if (len < sizeof head + tail || memcmp(line, head, sizeof head - 1) != 0)
        return -1;
    char *end;
    errno = 0;
    unsigned long long seq = strtoull(line + sizeof head - 1, &end, 10);
    if (errno || end == line + sizeof head - 1 || strncmp(end, ",\"prev\":\"", 9) != 0)
        return -1;
    const char *prev = end + 9;
    if ((size_t)(prev - line) + AUDIT_HASH_HEX + 1 > len - tail || !is_hex64(prev) || prev[AUDIT_HASH_HEX] != '"')
        return -1;
    const char *h = line + len - tail;
    if (memcmp(h, HASH_MEMBER, strlen(HASH_MEMBER)) != 0 || !is_hex64(h + strlen(HASH_MEMBER)) ||
        memcmp(line + len - 2, "\"}", 2) != 0)
        return -1;
    r->seq = seq;
    memcpy(r->prev, prev, AUDIT_HASH_HEX);
    r->prev[AUDIT_HASH_HEX] = '\0';
    memcpy(r->hash, h + strlen(HASH_MEMBER), AUDIT_HASH_HEX);
    r->hash[AUDIT_HASH_HEX] = '\0';
    r->hashed_len = (size_t)(h - line);
    r->partition = -1;
    r->offset = -1;
    /* The kafka member is the last before hash; a quote inside a string value is always
     * escaped, so the pattern can only be the member itself. */
    const char *k = NULL;
    for (const char *p = line; (p = memmem(p, (size_t)(h - p), KAFKA_MEMBER, strlen(KAFKA_MEMBER))) != NULL; p++)
        k = p;
    long long part, off;
    if (k && sscanf(k + strlen(KAFKA_MEMBER), "%lld,\"offset\":%lld", &part, &off) == 2 && part >= 0 &&
        part < AUDIT_MAX_PARTITIONS) {
        r->partition = (int)part;
        r->offset = off;
    }
    return 0;
}

static int is_segment_name(const char *name)
{
    /* audit-YYYY-MM-DD.jsonl */
    return strlen(name) == 22 && strncmp(name, "audit-", 6) == 0 && strcmp(name + 16, ".jsonl") == 0;
}

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int audit_log_segments(const char *dir, char ***names)
{
    DIR *d = opendir(dir);
    *names = NULL;
    if (d == NULL)
        return -1;
    int n = 0, cap = 0;
    char **list = NULL;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        if (!is_segment_name(e->d_name))
            continue;
        if (n == cap) {
            char **bigger = realloc(list, (size_t)(cap = cap ? cap * 2 : 16) * sizeof *list);
            if (bigger == NULL)
                break;
            list = bigger;
        }
        if ((list[n] = strdup(e->d_name)) != NULL)
            n++;
    }
    closedir(d);
    if (n > 0)
        qsort(list, (size_t)n, sizeof *list, compare_names);
    *names = list;
    return n;
}

void audit_log_free_names(char **names, int n)
{
    for (int i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

/* Reads the anchor (where the chain starts after retention). Returns 1 when present
 * and valid, 0 when absent, -1 when present but unreadable. */
static int read_anchor(const char *dir, uint64_t *seq, char prev[AUDIT_HASH_HEX + 1])
{
    char path[AUDIT_PATH_MAX + 32], buf[512];
    snprintf(path, sizeof path, "%s/%s", dir, AUDIT_ANCHOR_FILE);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return errno == ENOENT ? 0 : -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    unsigned long long s;
    if (sscanf(buf, "{\"seq\":%llu,\"prev\":\"%64[0-9a-f]\"", &s, prev) != 2 || strlen(prev) != AUDIT_HASH_HEX)
        return -1;
    *seq = s;
    return 1;
}

/* ---- writer ------------------------------------------------------------------------ */

/* Scans one segment: the last good record becomes the head, offsets are noted, and a
 * torn or malformed tail is cut off. Returns 0 or -1. */
static int scan_segment(audit_log *l, const char *path, bool *any, char *err, size_t errsz)
{
    FILE *f = fopen(path, "r+");
    if (f == NULL) {
        snprintf(err, errsz, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    char *line = NULL;
    size_t cap = 0;
    off_t good_end = 0, pos = 0;
    ssize_t n;
    record r;
    while ((n = getline(&line, &cap, f)) > 0) {
        pos += n;
        if (line[n - 1] != '\n' || parse_record(line, (size_t)n - 1, &r) != 0)
            break;
        good_end = pos;
        *any = true;
        l->seq = r.seq;
        memcpy(l->head, r.hash, sizeof l->head);
        if (r.partition >= 0 && r.offset > l->last_offset[r.partition])
            l->last_offset[r.partition] = r.offset;
    }
    free(line);
    struct stat st;
    int rc = 0;
    if (fstat(fileno(f), &st) == 0 && st.st_size > good_end) {
        if (ftruncate(fileno(f), good_end) != 0) {
            snprintf(err, errsz, "cannot truncate the torn end of %s: %s", path, strerror(errno));
            rc = -1;
        }
    }
    fclose(f);
    return rc;
}

int audit_log_open(audit_log *l, const char *dir, char *err, size_t errsz)
{
    memset(l, 0, sizeof *l);
    l->fd = -1;
    memcpy(l->head, ZERO_HASH, sizeof l->head);
    for (int i = 0; i < AUDIT_MAX_PARTITIONS; i++)
        l->last_offset[i] = -1;
    if (snprintf(l->dir, sizeof l->dir, "%s", dir) >= (int)sizeof l->dir) {
        snprintf(err, errsz, "audit directory path too long");
        return -1;
    }
    if (mkdir(dir, 0750) != 0 && errno != EEXIST) {
        snprintf(err, errsz, "cannot create %s: %s", dir, strerror(errno));
        return -1;
    }
    uint64_t anchor_seq;
    char anchor_prev[AUDIT_HASH_HEX + 1];
    int a = read_anchor(dir, &anchor_seq, anchor_prev);
    if (a < 0) {
        snprintf(err, errsz, "%s/%s is unreadable", dir, AUDIT_ANCHOR_FILE);
        return -1;
    }
    if (a == 1) {   /* every record may have been removed: continue from the anchor */
        l->seq = anchor_seq - 1;
        memcpy(l->head, anchor_prev, sizeof l->head);
    }
    char **names;
    int n = audit_log_segments(dir, &names);
    if (n < 0) {
        snprintf(err, errsz, "cannot read %s: %s", dir, strerror(errno));
        return -1;
    }
    int rc = 0;
    bool any = false;
    /* Newest first, until a segment holds a record: an empty newest segment (made just
     * before a crash) leaves the head in the one before. */
    for (int i = n - 1; i >= 0 && !any && rc == 0; i--) {
        char path[AUDIT_PATH_MAX + 32];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        rc = scan_segment(l, path, &any, err, errsz);
    }
    audit_log_free_names(names, n);
    return rc;
}

bool audit_log_has(const audit_log *l, int partition, int64_t offset)
{
    return partition >= 0 && partition < AUDIT_MAX_PARTITIONS && offset <= l->last_offset[partition];
}

/* Makes sure the open segment is today's. */
static int open_segment(audit_log *l, time_t now, char *err, size_t errsz)
{
    char day[11];
    audit_log_day(now, day);
    if (l->fd >= 0 && strcmp(day, l->day) == 0)
        return 0;
    if (l->fd >= 0) {   /* the old day's segment is complete: make it durable first */
        if (fsync(l->fd) != 0) {
            snprintf(err, errsz, "fsync of the audit segment failed: %s", strerror(errno));
            return -1;
        }
        close(l->fd);
        l->fd = -1;
    }
    char path[AUDIT_PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/audit-%s.jsonl", l->dir, day);
    l->fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (l->fd < 0) {
        snprintf(err, errsz, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    memcpy(l->day, day, sizeof l->day);
    l->dir_dirty = true;
    return 0;
}

int audit_log_append(audit_log *l, const char *fields, size_t fields_len, time_t now, int partition,
                     int64_t offset, char *err, size_t errsz)
{
    if (fields_len == 0) {
        snprintf(err, errsz, "empty audit record");
        return -1;
    }
    if (open_segment(l, now, err, errsz) != 0)
        return -1;
    char head[128], kafka[96];
    int hn = snprintf(head, sizeof head, "{\"seq\":%" PRIu64 ",\"prev\":\"%s\",", l->seq + 1, l->head);
    int kn = snprintf(kafka, sizeof kafka, KAFKA_MEMBER "%d,\"offset\":%" PRId64 "}", partition, offset);
    size_t len = (size_t)hn + fields_len + (size_t)kn;
    size_t total = len + strlen(HASH_MEMBER) + AUDIT_HASH_HEX + 3;
    char *line = malloc(total + 1);
    if (line == NULL) {
        snprintf(err, errsz, "out of memory");
        return -1;
    }
    memcpy(line, head, (size_t)hn);
    memcpy(line + hn, fields, fields_len);
    memcpy(line + hn + fields_len, kafka, (size_t)kn);
    char hash[AUDIT_HASH_HEX + 1];
    sha256_hex(line, len, hash);
    snprintf(line + len, total + 1 - len, HASH_MEMBER "%s\"}\n", hash);
    /* One write of the whole line (O_APPEND): a crash leaves at most one torn line,
     * which audit_log_open cuts off. */
    size_t done = 0;
    while (done < total) {
        ssize_t w = write(l->fd, line + done, total - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            snprintf(err, errsz, "writing the audit segment failed: %s", strerror(errno));
            /* Undo a partial line so that the chain on disk stays whole. */
            if (done > 0) {
                off_t size = lseek(l->fd, 0, SEEK_END);
                if (size >= (off_t)done && ftruncate(l->fd, size - (off_t)done) != 0)
                    snprintf(err, errsz, "writing the audit segment failed and left a torn line");
            }
            free(line);
            return -1;
        }
        done += (size_t)w;
    }
    free(line);
    l->seq++;
    memcpy(l->head, hash, sizeof l->head);
    if (partition >= 0 && partition < AUDIT_MAX_PARTITIONS && offset > l->last_offset[partition])
        l->last_offset[partition] = offset;
    l->unsynced++;
    return 0;
}

static int fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

int audit_log_sync(audit_log *l, char *err, size_t errsz)
{
    if (l->fd >= 0 && fsync(l->fd) != 0) {
        snprintf(err, errsz, "fsync of the audit segment failed: %s", strerror(errno));
        return -1;
    }
    if (l->dir_dirty) {
        if (fsync_dir(l->dir) != 0) {
            snprintf(err, errsz, "fsync of %s failed: %s", l->dir, strerror(errno));
            return -1;
        }
        l->dir_dirty = false;
    }
    l->unsynced = 0;
    return 0;
}

void audit_log_close(audit_log *l)
{
    if (l->fd >= 0) {
        fsync(l->fd);
        close(l->fd);
    }
    l->fd = -1;
}

/* ---- verify ------------------------------------------------------------------------ */

int audit_log_verify(const char *dir, audit_verify_result *r)
{
    memset(r, 0, sizeof *r);
    uint64_t expect_seq = 1;
    char expect_prev[AUDIT_HASH_HEX + 1];
    memcpy(expect_prev, ZERO_HASH, sizeof expect_prev);
    int a = read_anchor(dir, &expect_seq, expect_prev);
    if (a < 0) {
        snprintf(r->problem, sizeof r->problem, "%s/%s is unreadable or malformed", dir, AUDIT_ANCHOR_FILE);
        return 1;
    }
    char **names;
    int n = audit_log_segments(dir, &names);
    if (n < 0) {
        snprintf(r->problem, sizeof r->problem, "cannot read %s: %s", dir, strerror(errno));
        return -1;
    }
    r->segments = n;
    memcpy(r->head, expect_prev, sizeof r->head);
    int rc = 0;
    char *line = NULL;
    size_t cap = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        char path[AUDIT_PATH_MAX + 32];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        FILE *f = fopen(path, "r");
        if (f == NULL) {
            snprintf(r->problem, sizeof r->problem, "cannot open %.1100s: %s", path, strerror(errno));
            rc = -1;
            break;
        }
        ssize_t len;
        for (long lineno = 1; rc == 0 && (len = getline(&line, &cap, f)) > 0; lineno++) {
            record rec;
            if (line[len - 1] == '\n')
                line[--len] = '\0';
            if (parse_record(line, (size_t)len, &rec) != 0) {
                snprintf(r->problem, sizeof r->problem, "%s line %ld: not an audit record (seq %" PRIu64 " expected)",
                         names[i], lineno, expect_seq);
                rc = 1;
                break;
            }
            char hash[AUDIT_HASH_HEX + 1];
            sha256_hex(line, rec.hashed_len, hash);
            if (strcmp(hash, rec.hash) != 0)
                snprintf(r->problem, sizeof r->problem,
                         "%s line %ld: record seq %" PRIu64 " was edited (its hash does not match its content)",
                         names[i], lineno, rec.seq);
            else if (rec.seq != expect_seq)
                snprintf(r->problem, sizeof r->problem,
                         "%s line %ld: record seq %" PRIu64 " where seq %" PRIu64
                         " belongs: records were removed or reordered before it",
                         names[i], lineno, rec.seq, expect_seq);
            else if (strcmp(rec.prev, expect_prev) != 0)
                snprintf(r->problem, sizeof r->problem,
                         "%s line %ld: record seq %" PRIu64 " does not follow the record before it (prev hash differs)",
                         names[i], lineno, rec.seq);
            if (r->problem[0]) {
                rc = 1;
                break;
            }
            if (r->records == 0)
                r->first_seq = rec.seq;
            r->records++;
            r->last_seq = rec.seq;
            expect_seq = rec.seq + 1;
            memcpy(expect_prev, rec.hash, sizeof expect_prev);
            memcpy(r->head, rec.hash, sizeof r->head);
        }
        fclose(f);
    }
    free(line);
    audit_log_free_names(names, n);
    return rc;
}

/* ---- retention --------------------------------------------------------------------- */

/* Reads the first record of a segment. Returns 0, or -1 when it has none. */
static int first_record(const char *path, record *r)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    char *line = NULL;
    size_t cap = 0;
    ssize_t n = getline(&line, &cap, f);
    int rc = -1;
    if (n > 1 && line[n - 1] == '\n')
        rc = parse_record(line, (size_t)n - 1, r);
    free(line);
    fclose(f);
    return rc;
}

/* Writes the anchor atomically (temporary file, fsync, rename, fsync of the directory). */
static int write_anchor(const char *dir, const record *first, const char *removed_before, char *err, size_t errsz)
{
    char tmp[AUDIT_PATH_MAX + 48], path[AUDIT_PATH_MAX + 32];
    snprintf(tmp, sizeof tmp, "%s/%s.tmp", dir, AUDIT_ANCHOR_FILE);
    snprintf(path, sizeof path, "%s/%s", dir, AUDIT_ANCHOR_FILE);
    FILE *f = fopen(tmp, "w");
    if (f == NULL) {
        snprintf(err, errsz, "cannot write %s: %s", tmp, strerror(errno));
        return -1;
    }
    fprintf(f, "{\"seq\":%" PRIu64 ",\"prev\":\"%s\",\"removed_before\":\"%s\"}\n", first->seq, first->prev,
            removed_before);
    int bad = fflush(f) != 0 || fsync(fileno(f)) != 0;
    bad |= fclose(f) != 0;
    if (bad || rename(tmp, path) != 0 || fsync_dir(dir) != 0) {
        snprintf(err, errsz, "cannot write %s: %s", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

int audit_log_apply_retention(const char *dir, time_t now, int days, char *err, size_t errsz)
{
    char cutoff[11];
    audit_log_day(now - (time_t)days * 86400, cutoff);
    char **names;
    int n = audit_log_segments(dir, &names);
    if (n < 0) {
        snprintf(err, errsz, "cannot read %s: %s", dir, strerror(errno));
        return -1;
    }
    int old = 0;   /* segments[0..old) are older than the cutoff; the newest always stays */
    while (old < n - 1 && strncmp(names[old] + 6, cutoff, 10) < 0)
        old++;
    /* The chain will start at the first record of the first segment kept (an empty
     * segment in between is skipped: it holds nothing to chain to). */
    record first;
    int keep = old;
    char path[AUDIT_PATH_MAX + 32];
    for (; keep < n; keep++) {
        snprintf(path, sizeof path, "%s/%s", dir, names[keep]);
        if (first_record(path, &first) == 0)
            break;
    }
    int removed = 0, rc = 0;
    if (old > 0 && keep < n)
        rc = write_anchor(dir, &first, cutoff, err, errsz);
    for (int i = 0; rc == 0 && i < old && keep < n; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        if (unlink(path) != 0) {
            snprintf(err, errsz, "cannot remove %s: %s", path, strerror(errno));
            rc = -1;
        } else
            removed++;
    }
    if (removed > 0)
        fsync_dir(dir);
    audit_log_free_names(names, n);
    return rc == 0 ? removed : -1;
}
