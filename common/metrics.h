/* metrics.h - a service's counters, gauges and histograms, rendered for Prometheus.
 *
 * A registry belongs to one service and names every metric citadel_<service>_<name>,
 * where <name> ends in its unit (requests_total, queue_depth, ttft_seconds). Metrics
 * are registered at start-up; each registration returns a handle that the hot path
 * updates without locks (counters and gauges are atomics; a histogram takes its own
 * short mutex so that its buckets, sum and count always agree). The admin listener
 * (admin.h) renders the registry on GET /metrics in the text exposition format 0.0.4:
 *
 *   # HELP citadel_router_requests_total Requests routed to a worker.
 *   # TYPE citadel_router_requests_total counter
 *   citadel_router_requests_total{outcome="done"} 42
 *
 * A metric family (one name) may have several series, each with its own label values
 * ({"outcome", "done", NULL}); registering the same name and labels again returns the
 * same handle, so modules may register what they use without coordinating. Every
 * update function accepts NULL and does nothing, so a service whose registration failed
 * (out of memory, a bad name) keeps running without that metric.
 */
#ifndef CITADEL_METRICS_H
#define CITADEL_METRICS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef struct metrics_registry metrics_registry;
typedef struct metrics_counter metrics_counter;      /* only goes up */
typedef struct metrics_gauge metrics_gauge;          /* goes up and down */
typedef struct metrics_histogram metrics_histogram;  /* counts observations into buckets */

#define METRICS_MAX_LABELS 4

/* A registry whose metrics are named citadel_<service>_...; NULL or "" gives plain
 * citadel_... . Returns NULL when out of memory. Free it after the admin listener
 * that renders it has stopped; the handles die with it. */
metrics_registry *metrics_registry_new(const char *service);
void metrics_registry_free(metrics_registry *r);

/* Register (or find) a series. name is the part after the prefix ([a-zA-Z0-9_:]); help
 * is the family's one-line description (the first registration's is kept); labels is
 * NULL or a NULL-terminated list of key, value pairs (at most METRICS_MAX_LABELS;
 * keys [a-zA-Z_][a-zA-Z0-9_]*, values any text, escaped on output). Returns NULL for a
 * bad name or label, a name already registered as another type, or no memory. */
metrics_counter *metrics_counter_new(metrics_registry *r, const char *name, const char *help,
                                     const char *const *labels);
metrics_gauge *metrics_gauge_new(metrics_registry *r, const char *name, const char *help,
                                 const char *const *labels);
/* bounds are the buckets' upper limits, strictly increasing and finite (a +Inf bucket
 * is always added); NULL uses METRICS_LATENCY_BUCKETS, suited to request latencies in
 * seconds. The bounds are copied; a family's series all use the first one's bounds. */
metrics_histogram *metrics_histogram_new(metrics_registry *r, const char *name, const char *help,
                                         const char *const *labels, const double *bounds, size_t n_bounds);
#define METRICS_LATENCY_BUCKETS_N 14
extern const double METRICS_LATENCY_BUCKETS[METRICS_LATENCY_BUCKETS_N];

/* Updates; thread-safe, lock-free except histogram_observe. Negative, NaN or infinite
 * counter increments are ignored (a counter never goes down). */
void metrics_counter_inc(metrics_counter *c);
void metrics_counter_add(metrics_counter *c, double v);
double metrics_counter_value(const metrics_counter *c);
void metrics_gauge_set(metrics_gauge *g, double v);
void metrics_gauge_add(metrics_gauge *g, double v);   /* negative to subtract */
double metrics_gauge_value(const metrics_gauge *g);
void metrics_histogram_observe(metrics_histogram *h, double v);
uint64_t metrics_histogram_count(metrics_histogram *h);
double metrics_histogram_sum(metrics_histogram *h);

/* Writes every family in registration order, each series in registration order.
 * Returns 0, or -1 when the stream reported an error. */
int metrics_render(metrics_registry *r, FILE *out);
/* The same with the admin listener's callback signature: admin_start(port,
 * metrics_write, registry). */
void metrics_write(FILE *out, void *registry);

#endif
