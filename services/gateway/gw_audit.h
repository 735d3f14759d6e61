/* gw_audit.h - the gateway's audit events: one AuditEvent per API request (every
 * status, 401s included; not /health), produced to Kafka topic citadel.audit through
 * common/kafka_producer (idempotent, acks=all, losses counted and logged), where
 * citadel-audit writes them into the hash-chained log.
 *
 * A gw_audit_record is the per-request record: gw_server.c begins one as a request
 * arrives, modules fill what they learn (the key, the body's hash, the model, usage,
 * the cache outcome, sanitizer findings), and exactly one gw_audit_emit sends it when
 * the request ends, whichever way it ends. Never holds prompt or output text.
 *
 * Without Kafka brokers (none configured and no local citadel-kafka-dev) auditing is
 * off, said once at start; emit then does nothing.
 */
#ifndef CITADEL_GW_AUDIT_H
#define CITADEL_GW_AUDIT_H

#include <stdbool.h>
#include <stdio.h>
#include <time.h>

#include <event2/http.h>

#include "gw_auth.h"

#define GW_AUDIT_MAX_ROLES 8
#define GW_AUDIT_MAX_FINDINGS 16
#define GW_AUDIT_TEXT_MAX 128

typedef struct gw_audit_finding {
    char type[32];                          /* "PHONE", "EMAIL", "BLOCKED_TERM", ... */
    unsigned count;
} gw_audit_finding;

/* What the audit event of one request says. Strings are cut to fit. */
typedef struct gw_audit_record {
    char request_id[48];
    long long ts_unix_ms;                   /* arrival */
    struct timespec started;                /* arrival, monotonic: for the latency */
    char action[24];                        /* "chat.completions", "completions", "models", "other" */
    char path[64];
    char client[64];                        /* peer IP address */
    char key_id[APIKEY_ID_MAX + 8];         /* empty until the caller is authenticated */
    char user[APIKEY_USER_MAX + 64];        /* the key's user, or a JWT's subject */
    char roles[GW_AUDIT_MAX_ROLES][32];
    int n_roles;
    char end_user[GW_AUDIT_TEXT_MAX];       /* the request's OpenAI `user` */
    char model[GW_AUDIT_TEXT_MAX];
    char adapter[GW_AUDIT_TEXT_MAX];
    char input_sha256[65];                  /* hex; empty when there was no body */
    long long prompt_tokens, completion_tokens, output_bytes;
    char cache[8];                          /* "hit", "miss", "bypass", "" */
    gw_audit_finding findings[GW_AUDIT_MAX_FINDINGS];
    int n_findings;
    bool emitted;
} gw_audit_record;

/* Starts the producer on brokers (empty: $CITADEL_HOME/run/kafka.bootstrap; neither:
 * auditing off, logged). options are more librdkafka settings (name=value,...); queue_max
 * bounds the events held during a broker outage. Registers its metrics with gw_log.
 * Returns 0, or -1 with a message for a bad setting. */
int gw_audit_init(const char *brokers, const char *options, int queue_max, char *err, size_t errsz);
/* Whether events are being produced. */
bool gw_audit_enabled(void);
/* Waits up to timeout_ms for queued events, counts the rest as lost, stops. */
void gw_audit_shutdown(int timeout_ms);

/* Begins the record of a request that just arrived (request id, time, path, client). */
void gw_audit_begin(gw_audit_record *r, struct evhttp_request *req, const char *request_id, const char *path);
/* The authenticated caller (key id, user, roles). */
void gw_audit_set_principal(gw_audit_record *r, const gw_principal *who);
/* The request body: only its SHA-256 is kept. */
void gw_audit_set_input(gw_audit_record *r, const void *body, size_t len);
/* Adds count findings of a type (the sanitizer's); the same type adds up. */
void gw_audit_add_finding(gw_audit_record *r, const char *type, unsigned count);
/* Produces the event with the final HTTP status, once: later calls do nothing. */
void gw_audit_emit(gw_audit_record *r, int status);

#endif
