/* audit_record.c - AuditEvent to audit log members (see audit_record.h). */
#include "audit_record.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>

#include "json_writer.h"

static void member_str(FILE *f, const char *key, const char *value)
{
    fprintf(f, ",\"%s\":", key);
    json_write_cstring(f, value ? value : "");
}

/* "2026-11-25T06:00:00.123Z" for a unix time in ms. */
static void iso_time(long long ms, char out[32])
{
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&s, &tm);
    size_t n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, 32 - n, ".%03dZ", (int)(ms % 1000));
}

char *audit_record_fields(const Citadel__AuditEvent *e, size_t *len)
{
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    if (f == NULL)
        return NULL;
    char ts[32];
    iso_time(e->ts_unix_ms, ts);
    fprintf(f, "\"ts\":\"%s\",\"ts_ms\":%lld", ts, (long long)e->ts_unix_ms);
    member_str(f, "request_id", e->request_id);
    member_str(f, "service", e->service);
    member_str(f, "action", e->action);
    member_str(f, "path", e->path);
    member_str(f, "key_id", e->key_id);
    member_str(f, "user", e->user);
    fputs(",\"roles\":[", f);
    for (size_t i = 0; i < e->n_roles; i++) {
        if (i) fputc(',', f);
        json_write_cstring(f, e->roles[i]);
    }
    fputc(']', f);
    member_str(f, "end_user", e->end_user);
    member_str(f, "model", e->model);
    member_str(f, "adapter", e->adapter);
    member_str(f, "input_sha256", e->input_sha256);
    fprintf(f, ",\"prompt_tokens\":%d,\"completion_tokens\":%d,\"output_bytes\":%lld", e->prompt_tokens,
            e->completion_tokens, (long long)e->output_bytes);
    fputs(",\"latency_seconds\":", f);
    json_write_number(f, e->latency_seconds);
    fprintf(f, ",\"status\":%d", e->status);
    member_str(f, "client", e->client_addr);
    member_str(f, "cache", e->cache);
    fputs(",\"findings\":{", f);
    for (size_t i = 0; i < e->n_findings; i++) {
        if (i) fputc(',', f);
        json_write_cstring(f, e->findings[i]->type ? e->findings[i]->type : "");
        fprintf(f, ":%u", e->findings[i]->count);
    }
    fputc('}', f);
    if (fclose(f) != 0) {
        free(buf);
        return NULL;
    }
    *len = n;
    return buf;
}

char *audit_record_undecodable(const void *payload, size_t n, long long received_ms, size_t *len)
{
    unsigned char md[32];
    unsigned int mdn = 0;
    EVP_Digest(payload, n, md, &mdn, EVP_sha256(), NULL);
    char hex[65], ts[32];
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    iso_time(received_ms, ts);
    char *buf = malloc(400);
    if (buf == NULL)
        return NULL;
    int k = snprintf(buf, 400,
                     "\"ts\":\"%s\",\"ts_ms\":%lld,\"error\":\"undecodable AuditEvent\",\"payload_bytes\":%zu,"
                     "\"payload_sha256\":\"%s\"",
                     ts, received_ms, n, hex);
    *len = (size_t)k;
    return buf;
}
