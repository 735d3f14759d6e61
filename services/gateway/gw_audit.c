/* gw_audit.c - per-request audit records to Kafka (see gw_audit.h). */
#include "gw_audit.h"

#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <openssl/evp.h>

#include "citadel.pb-c.h"
#include "gw_log.h"
#include "kafka_producer.h"
#include "log.h"

#define AUDIT_TOPIC "citadel.audit"

static kafka_producer *producer;

int gw_audit_init(const char *brokers, const char *options, int queue_max, char *err, size_t errsz)
{
    char resolved[1024];
    log_init("gateway");   /* the producer logs through common/log */
    if (kafka_resolve_brokers(brokers, resolved, sizeof resolved) != 0) {
        gw_log(GW_LOG_WARN, NULL, "auditing is OFF: no Kafka brokers (set CITADEL_KAFKA_BROKERS or start citadel-kafka-dev)");
        return 0;
    }
    kafka_producer_config cfg = {.brokers = resolved, .metric_prefix = "citadel_gateway_audit",
                                 .queue_max = queue_max, .message_timeout_ms = 0,
                                 .client_id = "citadel-gateway", .options = options};
    producer = kafka_producer_new(&cfg, err, errsz);
    if (producer == NULL)
        return -1;
    gw_metrics_add_source(kafka_producer_write_metrics, producer);
    gw_log(GW_LOG_INFO, NULL, "auditing every request to %s on %s (queue of %d events)", AUDIT_TOPIC, resolved,
           queue_max);
    return 0;
}

bool gw_audit_enabled(void) { return producer != NULL; }

void gw_audit_shutdown(int timeout_ms)
{
    kafka_producer_free(producer, timeout_ms);
    producer = NULL;
}

static void copy(char *dst, size_t cap, const char *src)
{
    snprintf(dst, cap, "%s", src ? src : "");
}

static const char *action_of(const char *path)
{
    if (strcmp(path, "/v1/chat/completions") == 0) return "chat.completions";
    if (strcmp(path, "/v1/completions") == 0) return "completions";
    if (strcmp(path, "/v1/models") == 0) return "models";
    return "other";
}

void gw_audit_begin(gw_audit_record *r, struct evhttp_request *req, const char *request_id, const char *path)
{
    memset(r, 0, sizeof *r);
    struct timeval tv;
    gettimeofday(&tv, NULL);
    r->ts_unix_ms = (long long)tv.tv_sec * 1000 + tv.tv_usec / 1000;
    clock_gettime(CLOCK_MONOTONIC, &r->started);
    copy(r->request_id, sizeof r->request_id, request_id);
    copy(r->path, sizeof r->path, path);
    copy(r->action, sizeof r->action, action_of(path ? path : ""));
    struct evhttp_connection *evcon = req ? evhttp_request_get_connection(req) : NULL;
    if (evcon) {
        char *addr = NULL;
        ev_uint16_t port = 0;
        evhttp_connection_get_peer(evcon, &addr, &port);
        copy(r->client, sizeof r->client, addr);
    }
}

void gw_audit_set_principal(gw_audit_record *r, const gw_principal *who)
{
    copy(r->key_id, sizeof r->key_id, who->key_id);
    copy(r->user, sizeof r->user, who->user);
    r->n_roles = 0;
    for (const char *p = who->roles; *p && r->n_roles < GW_AUDIT_MAX_ROLES;) {
        size_t n = strcspn(p, ",");
        if (n > 0 && n < sizeof r->roles[0]) {
            memcpy(r->roles[r->n_roles], p, n);
            r->roles[r->n_roles++][n] = '\0';
        }
        p += n + (p[n] == ',');
    }
}

void gw_audit_set_input(gw_audit_record *r, const void *body, size_t len)
{
    unsigned char md[32];
    unsigned int n = 0;
    if (EVP_Digest(body, len, md, &n, EVP_sha256(), NULL) != 1)
        return;
    for (int i = 0; i < 32; i++)
        snprintf(r->input_sha256 + 2 * i, 3, "%02x", md[i]);
}

void gw_audit_add_finding(gw_audit_record *r, const char *type, unsigned count)
{
    for (int i = 0; i < r->n_findings; i++) {
        if (strcmp(r->findings[i].type, type) == 0) {
            r->findings[i].count += count;
            return;
        }
    }
    if (r->n_findings < GW_AUDIT_MAX_FINDINGS) {
        copy(r->findings[r->n_findings].type, sizeof r->findings[0].type, type);
        r->findings[r->n_findings++].count = count;
    }
}

void gw_audit_emit(gw_audit_record *r, int status)
{
    if (r == NULL || r->emitted)
        return;
    r->emitted = true;
    if (producer == NULL)
        return;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    Citadel__AuditEvent e = CITADEL__AUDIT_EVENT__INIT;
    char *roles[GW_AUDIT_MAX_ROLES];
    Citadel__SanitizeFinding findings[GW_AUDIT_MAX_FINDINGS], *finding_ptrs[GW_AUDIT_MAX_FINDINGS];
    for (int i = 0; i < r->n_roles; i++)
        roles[i] = r->roles[i];
    for (int i = 0; i < r->n_findings; i++) {
        citadel__sanitize_finding__init(&findings[i]);
        findings[i].type = r->findings[i].type;
        findings[i].count = r->findings[i].count;
        finding_ptrs[i] = &findings[i];
    }
    e.request_id = r->request_id;
    e.ts_unix_ms = r->ts_unix_ms;
    e.service = "gateway";
    e.action = r->action;
    e.path = r->path;
    e.key_id = r->key_id;
    e.user = r->user;
    e.n_roles = (size_t)r->n_roles;
    e.roles = roles;
    e.end_user = r->end_user;
    e.model = r->model;
    e.adapter = r->adapter;
    e.input_sha256 = r->input_sha256;
    e.prompt_tokens = (int32_t)r->prompt_tokens;
    e.completion_tokens = (int32_t)r->completion_tokens;
    e.output_bytes = r->output_bytes;
    e.latency_seconds = (double)(now.tv_sec - r->started.tv_sec) + (double)(now.tv_nsec - r->started.tv_nsec) / 1e9;
    e.status = status;
    e.client_addr = r->client;
    e.cache = r->cache;
    e.n_findings = (size_t)r->n_findings;
    e.findings = finding_ptrs;
    size_t len = citadel__audit_event__get_packed_size(&e);
    uint8_t *buf = malloc(len ? len : 1);
    if (buf == NULL) {
        gw_log(GW_LOG_ERROR, r->request_id, "audit event lost: out of memory");
        gw_metric_error("audit_event_lost");
        return;
    }
    citadel__audit_event__pack(&e, buf);
    if (kafka_produce(producer, AUDIT_TOPIC, r->request_id, strlen(r->request_id), buf, len) != 0)
        gw_metric_error("audit_event_lost");   /* the producer logged it with the request id */
    free(buf);
}
