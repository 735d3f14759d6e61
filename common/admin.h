/* admin.h - every service's admin HTTP listener, on its own port and its own thread:
 *
 *   GET /metrics   200, Prometheus text (text/plain; version=0.0.4) from the service's
 *                  metrics callbacks (metrics_write renders a metrics_registry)
 *   GET /healthz   200 "ok" while the process is alive: the listener answering is the proof
 *   GET /readyz    200 "ready" once the service called admin_set_ready(a, true), else 503;
 *                  a draining service sets it false so that load balancers stop sending
 *   anything else  404 (unknown path) or 405 (a method other than GET or HEAD)
 *
 * The listener is libevent's evhttp on a private event base run by one thread, so it
 * answers while the service's own loop is busy (a worker in the middle of a long
 * generation, a router in zmq_poll). Metrics callbacks therefore run on the admin
 * thread and must read only thread-safe state (metrics.h handles are). The thread
 * blocks all signals, so SIGTERM reaches the service's threads and a scraper hanging
 * up mid-reply cannot SIGPIPE the process.
 */
#ifndef CITADEL_ADMIN_H
#define CITADEL_ADMIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

typedef struct admin_server admin_server;

/* Writes Prometheus text to out; called on the admin thread for each GET /metrics. */
typedef void (*admin_metrics_fn)(FILE *out, void *user);

/* Binds host:port (port 0: any free port, see admin_port) and starts the thread.
 * write_metrics may be NULL (an empty /metrics). Not ready until admin_set_ready.
 * Returns NULL with a message in err when the port cannot be bound or the thread not
 * started. */
admin_server *admin_start_at(const char *host, int port, admin_metrics_fn write_metrics, void *user,
                             char *err, size_t errsz);
/* admin_start_at on every interface (0.0.0.0), the failure logged (log.h). */
admin_server *admin_start(int port, admin_metrics_fn write_metrics, void *user);

/* Adds another metrics source, rendered after the earlier ones (a service's registry
 * beside a module's own). At most ADMIN_MAX_SOURCES in all; returns 0 or -1. */
#define ADMIN_MAX_SOURCES 8
int admin_add_metrics(admin_server *a, admin_metrics_fn write_metrics, void *user);

/* What /readyz answers. NULL-safe, thread-safe. */
void admin_set_ready(admin_server *a, bool ready);
bool admin_is_ready(const admin_server *a);
/* The port actually bound (useful after port 0); 0 for NULL. */
int admin_port(const admin_server *a);

/* Stops the thread, closes the port and frees a; a request being answered finishes
 * first. NULL is a no-op. */
void admin_stop(admin_server *a);

#endif
