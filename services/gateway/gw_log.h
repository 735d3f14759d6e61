/* gw_log.h - the gateway's logs and metrics: one JSON object a line on stderr
 * (ts, level, service, request_id, msg) and Prometheus metrics served by the admin
 * listener (/metrics, /healthz, /readyz; port 9100 by default).
 *
 * Every gateway module logs and counts through these calls only, so that they can be
 * pointed at the fleet's common/log and common/metrics without touching the callers.
 * Single-threaded, like the gateway's event loop. Keys are never passed to gw_log.
 */
#ifndef CITADEL_GW_LOG_H
#define CITADEL_GW_LOG_H

#include <stdbool.h>
#include <stdio.h>

#include <event2/event.h>

enum gw_log_level { GW_LOG_DEBUG, GW_LOG_INFO, GW_LOG_WARN, GW_LOG_ERROR };

/* Minimum level written (default GW_LOG_INFO). */
void gw_log_set_level(enum gw_log_level level);
/* Parses "debug", "info", "warn", "error"; returns -1 for anything else. */
int gw_log_parse_level(const char *name, enum gw_log_level *out);

/* Writes {"ts":…,"level":…,"service":"gateway","request_id":…,"msg":…}; request_id may
 * be NULL. msg is printf-formatted and JSON-escaped. */
void gw_log(enum gw_log_level level, const char *request_id, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* citadel_gateway_requests_total{status} and, when seconds > 0, the
 * citadel_gateway_request_duration_seconds histogram. Status 499: client went away. */
void gw_metric_request(int status, double seconds);
/* citadel_request_ttft_seconds: time to the first generated text. */
void gw_metric_ttft(double seconds);
void gw_metric_in_flight(unsigned long n);
void gw_metric_connections(unsigned long n);
/* citadel_gateway_errors_total{kind}: events that are not HTTP statuses. */
void gw_metric_error(const char *kind);

/* Serves /metrics, /healthz and /readyz over plain HTTP on addr:port. ready() says
 * whether /readyz answers 200. Returns 0, or -1 with a message. */
int gw_admin_start(struct event_base *base, const char *addr, int port, bool (*ready)(void *),
                   void *arg, char *err, unsigned long errsz);
void gw_admin_stop(void);

/* Adds another module's metrics (Prometheus text written to out), rendered after the
 * gateway's own on every /metrics. At most 4. Returns 0, or -1 when full. */
int gw_metrics_add_source(void (*write)(FILE *out, void *arg), void *arg);

/* The metrics in Prometheus text format (malloc'd; for tests and /metrics). */
char *gw_metrics_render(void);

#endif
