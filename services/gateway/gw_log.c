/* gw_log.c - JSON-line logs, Prometheus metrics and the admin listener of the gateway
 * (see gw_log.h). State is process-wide and touched only from the event loop. */
#include "gw_log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <jansson.h>

static enum gw_log_level min_level = GW_LOG_INFO;
static const char *level_names[] = {"debug", "info", "warn", "error"};

void gw_log_set_level(enum gw_log_level level)
{
    min_level = level;
}

int gw_log_parse_level(const char *name, enum gw_log_level *out)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(name, level_names[i]) == 0) {
            *out = (enum gw_log_level)i;
            return 0;
        }
    return -1;
}

void gw_log(enum gw_log_level level, const char *request_id, const char *fmt, ...)
{
    if (level < min_level) return;
    char msg[1024], ts[40];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    struct tm tm;
    gmtime_r(&now.tv_sec, &tm);
    size_t n = strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + n, sizeof ts - n, ".%03ldZ", now.tv_nsec / 1000000);
    /* jansson escapes and, for a message cut inside a UTF-8 character, refuses:
     * then the message goes out with its bytes replaced. */
    json_t *m = json_string(msg);
    if (m == NULL) {
        for (char *p = msg; *p; p++)
            if ((unsigned char)*p >= 0x80) *p = '?';
        m = json_string(msg);
    }
    json_t *o = json_pack("{s:s, s:s, s:s, s:s?, s:o}", "ts", ts, "level", level_names[level],
                          "service", "gateway", "request_id", request_id, "msg", m);
    char *line = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    if (line) fprintf(stderr, "%s\n", line);
    free(line);
    json_decref(o);
}

/* ---- metrics ---------------------------------------------------------------------- */

/* Latency buckets (seconds) for both histograms: from a cached reply to a long answer. */
static const double buckets[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120};
#define N_BUCKETS (sizeof buckets / sizeof buckets[0])

typedef struct histogram {
    unsigned long counts[N_BUCKETS];   /* not cumulative; summed when rendered */
    unsigned long count;
    double sum;
} histogram;

#define MAX_ERROR_KINDS 16

static struct {
    unsigned long by_status[600];
    histogram duration, ttft;
    unsigned long in_flight, connections;
    const char *error_kinds[MAX_ERROR_KINDS];
    unsigned long error_counts[MAX_ERROR_KINDS];
} metrics;

static void observe(histogram *h, double v)
{
    for (size_t i = 0; i < N_BUCKETS; i++)
        if (v <= buckets[i]) {
            h->counts[i]++;
            break;
        }
    h->count++;
    h->sum += v;
}

void gw_metric_request(int status, double seconds)
{
    if (status >= 100 && status < 600) metrics.by_status[status]++;
    if (seconds > 0) observe(&metrics.duration, seconds);
}

void gw_metric_ttft(double seconds) { observe(&metrics.ttft, seconds); }
void gw_metric_in_flight(unsigned long n) { metrics.in_flight = n; }
void gw_metric_connections(unsigned long n) { metrics.connections = n; }

/* kind must be a string literal (kept by pointer). */
void gw_metric_error(const char *kind)
{
    for (int i = 0; i < MAX_ERROR_KINDS; i++) {
        if (metrics.error_kinds[i] == NULL) metrics.error_kinds[i] = kind;
        if (strcmp(metrics.error_kinds[i], kind) == 0) {
            metrics.error_counts[i]++;
            return;
        }
    }
}

static void render_histogram(struct evbuffer *b, const char *name, const char *help,
                             const histogram *h)
{
    evbuffer_add_printf(b, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    unsigned long cum = 0;
    for (size_t i = 0; i < N_BUCKETS; i++) {
        cum += h->counts[i];
        evbuffer_add_printf(b, "%s_bucket{le=\"%g\"} %lu\n", name, buckets[i], cum);
    }
    evbuffer_add_printf(b, "%s_bucket{le=\"+Inf\"} %lu\n%s_sum %.6f\n%s_count %lu\n", name,
                        h->count, name, h->sum, name, h->count);
}

/* Other modules' metrics (gw_metrics_add_source), rendered after the gateway's own. */
#define MAX_METRIC_SOURCES 4
static struct { void (*write)(FILE *, void *); void *arg; } metric_sources[MAX_METRIC_SOURCES];

int gw_metrics_add_source(void (*write)(FILE *out, void *arg), void *arg)
{
    for (int i = 0; i < MAX_METRIC_SOURCES; i++) {
        if (metric_sources[i].write == NULL) {
            metric_sources[i].write = write;
            metric_sources[i].arg = arg;
            return 0;
        }
    }
    return -1;
}

char *gw_metrics_render(void)
{
    struct evbuffer *b = evbuffer_new();
    if (b == NULL) return NULL;
    evbuffer_add_printf(b, "# HELP citadel_gateway_requests_total HTTP requests answered, by status.\n"
                           "# TYPE citadel_gateway_requests_total counter\n");
    for (int s = 100; s < 600; s++)
        if (metrics.by_status[s])
            evbuffer_add_printf(b, "citadel_gateway_requests_total{status=\"%d\"} %lu\n", s, metrics.by_status[s]);
    render_histogram(b, "citadel_gateway_request_duration_seconds",
                     "Time from request to the end of the response.", &metrics.duration);
    render_histogram(b, "citadel_request_ttft_seconds", "Time to the first generated text.", &metrics.ttft);
    evbuffer_add_printf(b, "# HELP citadel_gateway_requests_in_flight Generations in progress.\n"
                           "# TYPE citadel_gateway_requests_in_flight gauge\n"
                           "citadel_gateway_requests_in_flight %lu\n"
                           "# HELP citadel_gateway_connections Open client connections.\n"
                           "# TYPE citadel_gateway_connections gauge\n"
                           "citadel_gateway_connections %lu\n"
                           "# HELP citadel_gateway_errors_total Failures that are not HTTP statuses.\n"
                           "# TYPE citadel_gateway_errors_total counter\n",
                        metrics.in_flight, metrics.connections);
    for (int i = 0; i < MAX_ERROR_KINDS && metrics.error_kinds[i]; i++)
        evbuffer_add_printf(b, "citadel_gateway_errors_total{kind=\"%s\"} %lu\n",
                            metrics.error_kinds[i], metrics.error_counts[i]);
    for (int i = 0; i < MAX_METRIC_SOURCES && metric_sources[i].write; i++) {
        char *text = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&text, &len);
        if (f == NULL) continue;
        metric_sources[i].write(f, metric_sources[i].arg);
        if (fclose(f) == 0) evbuffer_add(b, text, len);
        free(text);
    }
    size_t n = evbuffer_get_length(b);
    char *s = malloc(n + 1);
    if (s != NULL) {
        evbuffer_remove(b, s, n);
        s[n] = '\0';
    }
    evbuffer_free(b);
    return s;
}

/* ---- admin listener ---------------------------------------------------------------- */

static struct {
    struct evhttp *http;
    bool (*ready)(void *);
    void *arg;
} admin;

static void admin_reply(struct evhttp_request *req, int status, const char *type, const char *body)
{
    struct evbuffer *b = evbuffer_new();
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", type);
    if (b) evbuffer_add(b, body, strlen(body));
    evhttp_send_reply(req, status, status == 200 ? "OK" : status == 404 ? "Not Found" : "Service Unavailable", b);
    if (b) evbuffer_free(b);
}

static void admin_request(struct evhttp_request *req, void *arg)
{
    (void)arg;
    const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
    if (path && strcmp(path, "/metrics") == 0) {
        char *m = gw_metrics_render();
        admin_reply(req, m ? 200 : 503, "text/plain; version=0.0.4", m ? m : "");
        free(m);
    } else if (path && strcmp(path, "/healthz") == 0) {
        admin_reply(req, 200, "text/plain", "ok\n");
    } else if (path && strcmp(path, "/readyz") == 0) {
        bool ok = admin.ready == NULL || admin.ready(admin.arg);
        admin_reply(req, ok ? 200 : 503, "text/plain", ok ? "ready\n" : "not ready\n");
    } else {
        admin_reply(req, 404, "text/plain", "not found\n");
    }
}

int gw_admin_start(struct event_base *base, const char *addr, int port, bool (*ready)(void *),
                   void *arg, char *err, unsigned long errsz)
{
    admin.http = evhttp_new(base);
    if (admin.http == NULL) {
        snprintf(err, errsz, "evhttp_new failed");
        return -1;
    }
    admin.ready = ready;
    admin.arg = arg;
    evhttp_set_gencb(admin.http, admin_request, NULL);
    evhttp_set_allowed_methods(admin.http, EVHTTP_REQ_GET);
    evhttp_set_timeout(admin.http, 10);
    if (evhttp_bind_socket(admin.http, addr, (ev_uint16_t)port) != 0) {
        snprintf(err, errsz, "cannot listen on %s:%d for the admin endpoints", addr, port);
        evhttp_free(admin.http);
        admin.http = NULL;
        return -1;
    }
    return 0;
}

void gw_admin_stop(void)
{
    if (admin.http) evhttp_free(admin.http);
    admin.http = NULL;
}
