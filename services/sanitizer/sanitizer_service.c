/* sanitizer_service.c - SanitizeRequest in, SanitizeResponse out (see
 * sanitizer_service.h). Whole texts go through sanitize_text; chunks of a stream
 * through the stream's stream_filter, found by stream_id in a small table. Each
 * sanitizer is reference-counted by the service (while current) and by the streams
 * that started on it, which is what lets a reload never disturb a stream.
 */
#include "sanitizer_service.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "stream_filter.h"

typedef struct san_ref {
    sanitizer *s;
    int refs;
} san_ref;

typedef struct stream_entry {
    char id[128];
    san_ref *ref;
    stream_filter *f;
    double last_seen;
} stream_entry;

enum { BLOCK_CONTENT_POLICY, BLOCK_CONTENT_FILTER, BLOCK_PII_POLICY, BLOCK_REASONS };

struct sanitizer_service {
    san_ref *current;
    shutdown_drain *drain;
    double idle_s;
    stream_entry *streams;
    size_t n_streams, cap_streams;
    metrics_counter *requests, *bytes, *errors, *bad_messages;
    metrics_counter *findings[SANITIZE_FINDING_COUNT], *blocked[BLOCK_REASONS];
    metrics_gauge *open_streams;
    metrics_histogram *seconds;
};

#define MAX_STREAMS 100000

static san_ref *ref_new(sanitizer *s)
{
    san_ref *r = malloc(sizeof *r);
    if (r == NULL) {
        sanitizer_free(s);
        return NULL;
    }
    *r = (san_ref){s, 1};
    return r;
}

static void ref_drop(san_ref *r)
{
    if (r && --r->refs == 0) {
        sanitizer_free(r->s);
        free(r);
    }
}

static void register_metrics(sanitizer_service *svc, metrics_registry *m)
{
    if (m == NULL) return;
    svc->requests = metrics_counter_new(m, "requests_total", "SanitizeRequests answered", NULL);
    svc->bytes = metrics_counter_new(m, "scanned_bytes_total", "bytes of text scanned", NULL);
    svc->errors = metrics_counter_new(m, "errors_total", "texts that could not be sanitized (failed closed)", NULL);
    svc->bad_messages = metrics_counter_new(m, "bad_messages_total", "undecodable or unexpected messages", NULL);
    for (int k = 0; k < SANITIZE_FINDING_COUNT; k++) {
        const char *labels[] = {"type", sanitize_finding_name(k), NULL};
        svc->findings[k] = metrics_counter_new(m, "findings_total", "findings by type", labels);
    }
    static const char *const reasons[BLOCK_REASONS] = {"content_policy", "content_filter", "pii_policy"};
    for (int k = 0; k < BLOCK_REASONS; k++) {
        const char *labels[] = {"reason", reasons[k], NULL};
        svc->blocked[k] = metrics_counter_new(m, "blocked_total", "texts or streams blocked, by reason", labels);
    }
    svc->open_streams = metrics_gauge_new(m, "streams_open", "output streams being filtered", NULL);
    svc->seconds = metrics_histogram_new(m, "request_seconds", "time to answer a SanitizeRequest", NULL, NULL, 0);
}

sanitizer_service *sanitizer_service_new(sanitizer *s, metrics_registry *m, shutdown_drain *drain,
                                         double stream_idle_s)
{
    sanitizer_service *svc = calloc(1, sizeof *svc);
    if (svc == NULL || (svc->current = ref_new(s)) == NULL) {
        if (svc == NULL) sanitizer_free(s);
        free(svc);
        return NULL;
    }
    svc->drain = drain;
    svc->idle_s = stream_idle_s;
    register_metrics(svc, m);
    return svc;
}

static void stream_remove(sanitizer_service *svc, size_t i)
{
    stream_filter_free(svc->streams[i].f);
    ref_drop(svc->streams[i].ref);
    svc->streams[i] = svc->streams[--svc->n_streams];
    if (svc->drain) shutdown_drain_leave(svc->drain);
    metrics_gauge_set(svc->open_streams, (double)svc->n_streams);
}

void sanitizer_service_free(sanitizer_service *svc)
{
    if (svc == NULL) return;
    while (svc->n_streams) stream_remove(svc, svc->n_streams - 1);
    free(svc->streams);
    ref_drop(svc->current);
    free(svc);
}

void sanitizer_service_swap(sanitizer_service *svc, sanitizer *s)
{
    san_ref *r = ref_new(s);
    if (r == NULL) {
        log_msg(LOG_ERROR, NULL, "reload: out of memory, keeping the previous lists and policies");
        return;
    }
    ref_drop(svc->current);
    svc->current = r;
}

size_t sanitizer_service_streams(const sanitizer_service *svc) { return svc->n_streams; }

void sanitizer_service_expire(sanitizer_service *svc, double now)
{
    for (size_t i = svc->n_streams; i-- > 0;)
        if (now - svc->streams[i].last_seen > svc->idle_s) {
            log_msg(LOG_WARN, svc->streams[i].id, "stream idle for %.0f s, dropped", svc->idle_s);
            stream_remove(svc, i);
        }
}

static stream_entry *stream_find(sanitizer_service *svc, const char *id)
{
    for (size_t i = 0; i < svc->n_streams; i++)
        if (!strcmp(svc->streams[i].id, id)) return &svc->streams[i];
    return NULL;
}

/* A new stream on the current sanitizer; NULL when draining, full or out of memory. */
static stream_entry *stream_open(sanitizer_service *svc, const char *id, sanitize_direction dir, double now)
{
    if (strlen(id) >= sizeof svc->streams[0].id || svc->n_streams >= MAX_STREAMS) return NULL;
    if (svc->n_streams == svc->cap_streams) {
        size_t cap = svc->cap_streams ? svc->cap_streams * 2 : 64;
        stream_entry *p = realloc(svc->streams, cap * sizeof *p);
        if (p == NULL) return NULL;
        svc->streams = p;
        svc->cap_streams = cap;
    }
    stream_filter *f = stream_filter_new(svc->current->s, dir);
    if (f == NULL || (svc->drain && !shutdown_drain_enter(svc->drain))) {
        stream_filter_free(f);
        return NULL;
    }
    stream_entry *e = &svc->streams[svc->n_streams++];
    snprintf(e->id, sizeof e->id, "%s", id);
    e->ref = svc->current;
    e->ref->refs++;
    e->f = f;
    e->last_seen = now;
    metrics_gauge_set(svc->open_streams, (double)svc->n_streams);
    return e;
}

static int send_response(void *sock, const envelope_route *route, const Citadel__SanitizeRequest *req,
                         const sanitize_result *r, size_t held)
{
    Citadel__SanitizeResponse resp = CITADEL__SANITIZE_RESPONSE__INIT;
    Citadel__SanitizeFinding f[SANITIZE_FINDING_COUNT], *fp[SANITIZE_FINDING_COUNT];
    size_t n = 0;
    for (int k = 0; k < SANITIZE_FINDING_COUNT; k++) {
        if (r->counts[k] == 0) continue;
        citadel__sanitize_finding__init(&f[n]);
        f[n].type = (char *)sanitize_finding_name(k);
        f[n].count = r->counts[k];
        fp[n] = &f[n];
        n++;
    }
    resp.text = r->text.data ? r->text.data : "";
    resp.n_findings = n;
    resp.findings = fp;
    resp.blocked = r->blocked;
    resp.reason = (char *)r->reason;
    resp.request_id = req->request_id;
    resp.stream_id = req->stream_id;
    resp.held_bytes = (uint32_t)held;
    char err[256];
    int rc = envelope_send(sock, route, &resp.base, err, sizeof err);
    if (rc != ENVELOPE_OK) log_msg(LOG_WARN, req->request_id, "cannot answer: %s", err);
    return rc;
}

/* Counts the findings and logs a block: types and counts only, never the text. */
static void account(sanitizer_service *svc, const Citadel__SanitizeRequest *req, const sanitize_result *r)
{
    log_field fields[SANITIZE_FINDING_COUNT + 1];
    size_t n = 0;
    for (int k = 0; k < SANITIZE_FINDING_COUNT; k++) {
        metrics_counter_add(svc->findings[k], r->counts[k]);
        if (r->counts[k]) fields[n++] = LOG_INT(sanitize_finding_name(k), r->counts[k]);
    }
    if (!r->blocked) return;
    int reason = !strncmp(r->reason, "pii_policy", 10) ? BLOCK_PII_POLICY
                 : !strcmp(r->reason, "content_filter") ? BLOCK_CONTENT_FILTER : BLOCK_CONTENT_POLICY;
    metrics_counter_inc(svc->blocked[reason]);
    fields[n++] = LOG_STR("reason", r->reason);
    log_fields(LOG_INFO, req->request_id, fields, n, "%s blocked",
               req->direction == CITADEL__SANITIZE_DIRECTION__OUTPUT ? "output" : "input");
}

static int sanitize_whole(sanitizer_service *svc, const Citadel__SanitizeRequest *req, sanitize_direction dir,
                          sanitize_result *r)
{
    return sanitize_text(svc->current->s, dir, req->text, strlen(req->text), r);
}

/* The next chunk of a stream; *gone says the stream is unknown and cannot be opened;
 * *held is what the stream still holds back after it. */
static int sanitize_chunk(sanitizer_service *svc, const Citadel__SanitizeRequest *req, sanitize_direction dir,
                          sanitize_result *r, double now, bool *gone, size_t *held)
{
    stream_entry *e = stream_find(svc, req->stream_id);
    if (e == NULL && (e = stream_open(svc, req->stream_id, dir, now)) == NULL) {
        *r = (sanitize_result){0};
        *gone = true;
        return -1;
    }
    e->last_seen = now;
    int rc = stream_filter_push(e->f, req->text, strlen(req->text), req->final, r);
    *held = stream_filter_done(e->f) ? 0 : stream_filter_held(e->f);
    if (rc || stream_filter_done(e->f)) stream_remove(svc, (size_t)(e - svc->streams));
    return rc;
}

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void on_request(sanitizer_service *svc, void *sock, const envelope *env, double now)
{
    const Citadel__SanitizeRequest *req = (const Citadel__SanitizeRequest *)env->msg;
    sanitize_direction dir = req->direction == CITADEL__SANITIZE_DIRECTION__OUTPUT ? SANITIZE_OUTPUT : SANITIZE_INPUT;
    double t0 = mono_now();
    sanitize_result r;
    bool gone = false;
    size_t held = 0;
    int rc;
    metrics_counter_inc(svc->requests);
    metrics_counter_add(svc->bytes, (double)strlen(req->text));
    if (*req->stream_id) {
        rc = sanitize_chunk(svc, req, dir, &r, now, &gone, &held);
    } else if (svc->drain && !shutdown_drain_enter(svc->drain)) {
        r = (sanitize_result){0};
        rc = -1, gone = true;
    } else {
        rc = sanitize_whole(svc, req, dir, &r);
        if (svc->drain) shutdown_drain_leave(svc->drain);
    }
    if (rc == 0) {
        account(svc, req, &r);
        send_response(sock, &env->route, req, &r, held);
    } else {
        metrics_counter_inc(svc->errors);
        log_msg(LOG_WARN, req->request_id, "%s", gone ? "refused: draining or too many streams" : "sanitizer failed");
        envelope_reply_error(sock, &env->route, req->request_id,
                             gone ? CITADEL__ERROR_CODE__UNAVAILABLE : CITADEL__ERROR_CODE__INTERNAL, "sanitizer",
                             gone ? "sanitizer unavailable (draining or stream table full)" : "text could not be sanitized",
                             NULL, 0);
    }
    sanitize_result_free(&r);
    metrics_histogram_observe(svc->seconds, mono_now() - t0);
}

void sanitizer_service_on_message(sanitizer_service *svc, void *sock, int rc, const envelope *env, double now)
{
    if (rc == ENVELOPE_TIMEOUT || rc == ENVELOPE_ERR_IO) return;
    if (rc == ENVELOPE_OK && env->type == ENVELOPE_SANITIZE_REQUEST) {
        on_request(svc, sock, env, now);
        return;
    }
    metrics_counter_inc(svc->bad_messages);
    log_msg(LOG_WARN, NULL, "bad message (%s): type %s", envelope_status_name(rc), env->type_name);
    envelope_reply_error(sock, &env->route, "", CITADEL__ERROR_CODE__INVALID_ARGUMENT, "sanitizer",
                         rc == ENVELOPE_OK ? "the sanitizer answers SanitizeRequest only" : envelope_status_name(rc),
                         NULL, 0);
}
