/* cmd_audit.c - `citadel audit verify` and `citadel audit query`: reading the
 * hash-chained audit log that citadel-audit writes (common/audit_log.h).
 *
 *   verify  checks every record's hash, seq and link to the one before; prints the
 *           chain's head (last seq and hash: keep a copy elsewhere to detect a cut-off
 *           or rewritten tail); exit 0 intact, 1 broken (the first broken record named)
 *   query   prints the records that match every filter given, as JSON lines, oldest
 *           first
 * The directory is --dir, else $CITADEL_HOME/audit.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "audit_log.h"
#include "cli.h"

static void default_dir(char *out, size_t cap)
{
    const char *home = getenv("CITADEL_HOME");
    snprintf(out, cap, "%s/audit", home && home[0] ? home : "./var");
}

static int audit_verify(int argc, char **argv)
{
    static const struct option options[] = {{"dir", required_argument, 0, 'd'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    char dir[AUDIT_PATH_MAX];
    default_dir(dir, sizeof dir);
    int opt;
    optind = 1;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        if (opt == 'h') {
            printf("usage: citadel audit verify [--dir DIR]\n"
                   "  checks the audit log's hash chain; exit 0 intact, 1 broken or unreadable\n");
            return 0;
        }
        if (opt == 'd')
            snprintf(dir, sizeof dir, "%s", optarg);
        else
            return cli_usage_error("audit verify", "unknown or incomplete option '%s'", argv[optind - 1]);
    }
    if (optind < argc)
        return cli_usage_error("audit verify", "unexpected argument '%s'", argv[optind]);
    audit_verify_result r;
    int rc = audit_log_verify(dir, &r);
    if (rc != 0) {
        fprintf(stderr, "citadel audit verify: %s: %s\n", rc > 0 ? "BROKEN" : "cannot verify", r.problem);
        if (r.records)
            fprintf(stderr, "  (%llu records before it are intact)\n", (unsigned long long)r.records);
        return 1;
    }
    printf("ok: %llu records in %d segment(s), seq %llu..%llu, head %s\n", (unsigned long long)r.records, r.segments,
           (unsigned long long)r.first_seq, (unsigned long long)r.last_seq, r.head);
    return 0;
}

/* Parses "YYYY-MM-DD", "YYYY-MM-DDTHH:MM[:SS][Z]" (UTC) or unix seconds into unix ms.
 * A bare date as an upper bound means the end of that day. */
static bool parse_time(const char *s, bool upper, long long *out)
{
    char *end;
    long long secs = strtoll(s, &end, 10);
    if (*s && *end == '\0') {   /* unix seconds */
        *out = secs * 1000;
        return true;
    }
    struct tm tm = {0};
    const char *rest = strptime(s, "%Y-%m-%d", &tm);
    if (rest == NULL)
        return false;
    bool date_only = *rest == '\0';
    if (!date_only) {
        const char *t = strptime(rest, "T%H:%M", &tm);
        if (t == NULL)
            return false;
        if (*t == ':' && (t = strptime(t, ":%S", &tm)) == NULL)
            return false;
        if (*t == 'Z')
            t++;
        if (*t)
            return false;
    }
    long long ms = (long long)timegm(&tm) * 1000;
    if (upper)
        ms += date_only ? 86400000LL - 1 : 999;
    *out = ms;
    return true;
}

typedef struct query_filter {
    const char *user, *key, *model, *action;
    long long from_ms, to_ms;                 /* inclusive; -1: open */
} query_filter;

static bool str_member_is(json_t *rec, const char *key, const char *want)
{
    const char *v = json_string_value(json_object_get(rec, key));
    return v && strcmp(v, want) == 0;
}

static bool matches(json_t *rec, const query_filter *f)
{
    if (f->user && !str_member_is(rec, "user", f->user) && !str_member_is(rec, "end_user", f->user))
        return false;
    if (f->key && !str_member_is(rec, "key_id", f->key))
        return false;
    if (f->model && !str_member_is(rec, "model", f->model))
        return false;
    if (f->action && !str_member_is(rec, "action", f->action))
        return false;
    long long ts = json_integer_value(json_object_get(rec, "ts_ms"));
    return (f->from_ms < 0 || ts >= f->from_ms) && (f->to_ms < 0 || ts <= f->to_ms);
}

/* Whether a segment (named by its day of writing) can hold records of the time range:
 * a record is written shortly after its request arrived, so a day of margin suffices. */
static bool segment_in_range(const char *name, const query_filter *f)
{
    struct tm tm = {0};
    if (strptime(name + 6, "%Y-%m-%d", &tm) == NULL)
        return true;
    long long start = (long long)timegm(&tm) * 1000, day = 86400000LL;
    return (f->to_ms < 0 || start <= f->to_ms) && (f->from_ms < 0 || start + 2 * day > f->from_ms);
}

static int query_segment(const char *path, const query_filter *f, long *matched)
{
    FILE *in = fopen(path, "r");
    if (in == NULL) {
        fprintf(stderr, "citadel audit query: cannot open %s\n", path);
        return -1;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, in)) > 0) {
        json_error_t jerr;
        json_t *rec = json_loadb(line, (size_t)n, 0, &jerr);
        if (rec && matches(rec, f)) {
            fwrite(line, 1, (size_t)n, stdout);
            (*matched)++;
        }
        json_decref(rec);
    }
    free(line);
    fclose(in);
    return 0;
}

static int audit_query(int argc, char **argv)
{
    static const struct option options[] = {
        {"dir", required_argument, 0, 'd'},  {"user", required_argument, 0, 'u'},  {"key", required_argument, 0, 'k'},
        {"model", required_argument, 0, 'm'}, {"action", required_argument, 0, 'a'}, {"from", required_argument, 0, 'f'},
        {"to", required_argument, 0, 't'},    {"help", no_argument, 0, 'h'},         {0, 0, 0, 0}};
    char dir[AUDIT_PATH_MAX];
    default_dir(dir, sizeof dir);
    query_filter f = {.from_ms = -1, .to_ms = -1};
    int opt;
    optind = 1;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (opt) {
        case 'h':
            printf("usage: citadel audit query [--dir DIR] [--user U] [--key KEY_ID] [--model M] [--action A]\n"
                   "                           [--from T] [--to T]\n"
                   "  prints matching audit records as JSON lines; --user matches the key's user or the\n"
                   "  request's `user`; T is YYYY-MM-DD, YYYY-MM-DDTHH:MM[:SS][Z] (UTC) or unix seconds\n");
            return 0;
        case 'd': snprintf(dir, sizeof dir, "%s", optarg); break;
        case 'u': f.user = optarg; break;
        case 'k': f.key = optarg; break;
        case 'm': f.model = optarg; break;
        case 'a': f.action = optarg; break;
        case 'f':
            if (!parse_time(optarg, false, &f.from_ms))
                return cli_usage_error("audit query", "bad --from '%s'", optarg);
            break;
        case 't':
            if (!parse_time(optarg, true, &f.to_ms))
                return cli_usage_error("audit query", "bad --to '%s'", optarg);
            break;
        default:
            return cli_usage_error("audit query", "unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return cli_usage_error("audit query", "unexpected argument '%s'", argv[optind]);
    char **names;
    int n = audit_log_segments(dir, &names);
    if (n < 0) {
        fprintf(stderr, "citadel audit query: cannot read %s\n", dir);
        return 1;
    }
    long matched = 0;
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        if (!segment_in_range(names[i], &f))
            continue;
        char path[AUDIT_PATH_MAX + 32];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        rc = query_segment(path, &f, &matched);
    }
    audit_log_free_names(names, n);
    fprintf(stderr, "%ld record(s)\n", matched);
    return rc ? 1 : 0;
}

int cmd_audit(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        printf("usage: citadel audit verify [--dir DIR]\n"
               "       citadel audit query [--dir DIR] [--user U] [--key K] [--model M] [--action A] [--from T] [--to T]\n");
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "verify"))
        return audit_verify(argc - 1, argv + 1);
    if (!strcmp(argv[1], "query"))
        return audit_query(argc - 1, argv + 1);
    return cli_usage_error("audit", "unknown subcommand '%s' (verify, query)", argv[1]);
}
