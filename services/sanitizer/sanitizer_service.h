/* sanitizer_service.h - what citadel-sanitizer does with each message, apart from
 * sockets and signals (main.c): SanitizeRequests answered with SanitizeResponses, the
 * streams in progress, the reload of lists and policies, the metrics.
 *
 * Single-threaded: main.c's poll loop calls in. A reload (sanitizer_service_swap)
 * takes effect for the next request and the next new stream; streams already open
 * finish on the sanitizer they started with, which is freed after their end, so no
 * request is dropped or sees half a reload.
 *
 * Nothing here logs or counts a value found in a text: only types and counts.
 */
#ifndef CITADEL_SANITIZER_SERVICE_H
#define CITADEL_SANITIZER_SERVICE_H

#include <stdbool.h>
#include <stddef.h>

#include "envelope.h"
#include "metrics.h"
#include "sanitize.h"
#include "shutdown.h"

typedef struct sanitizer_service sanitizer_service;

/* A service using s (ownership taken) and registering its metrics in m (may be NULL);
 * drain (may be NULL) counts open streams and whole-text requests in flight; streams
 * silent for stream_idle_s are dropped. Returns NULL when out of memory (s is freed). */
sanitizer_service *sanitizer_service_new(sanitizer *s, metrics_registry *m, shutdown_drain *drain,
                                         double stream_idle_s);
void sanitizer_service_free(sanitizer_service *svc);

/* Makes s (ownership taken) the sanitizer for new requests and streams. */
void sanitizer_service_swap(sanitizer_service *svc, sanitizer *s);

/* Answers one received message on sock along its route: SanitizeResponse, or an Error
 * (undecodable or unexpected message: INVALID_ARGUMENT; sanitizer failure: INTERNAL;
 * draining: UNAVAILABLE). rc is envelope_recv's result for env. */
void sanitizer_service_on_message(sanitizer_service *svc, void *sock, int rc, const envelope *env, double now);

/* Drops streams idle for longer than the limit. */
void sanitizer_service_expire(sanitizer_service *svc, double now);
/* Streams open. */
size_t sanitizer_service_streams(const sanitizer_service *svc);

#endif
