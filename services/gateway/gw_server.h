/* gw_server.h - the gateway's HTTPS front: libevent's evhttp over bufferevent_openssl,
 * the OpenAI-compatible routes, authentication, limits, and the life of one call from
 * request to the last SSE chunk.
 *
 * main.c builds the TLS context, key store and upstream, then gw_server_start binds the
 * listener. Routes: POST /v1/chat/completions, POST /v1/completions, GET /v1/models,
 * /admin/keys (gw_admin_keys.h), GET /health (open). Every other request is matched to
 * a route of the policy (gw_policy.h), authenticated (gw_auth.h) and allowed only when
 * one of the caller's roles grants the route's permission; a generation must also name
 * a model the caller's key allows, and pass the caller's rate limits (gw_ratelimit.h:
 * 429 with Retry-After; x-ratelimit-* headers on every generation). Everything that goes wrong becomes an OpenAI-shaped
 * error body, is logged and counted.
 *
 * Limits: header bytes and body bytes (evhttp refuses larger ones itself, 400/413),
 * a deadline for a connection's request headers (from accept, and again after each
 * response on a kept-alive connection: a slow client is dropped however it trickles),
 * an idle/IO timeout, and a connection cap (the listener stops accepting at the cap,
 * so excess clients wait in the kernel's backlog instead of costing memory).
 */
#ifndef CITADEL_GW_SERVER_H
#define CITADEL_GW_SERVER_H

#include <stdbool.h>
#include <stddef.h>

#include <event2/event.h>
#include <openssl/ssl.h>

#include "gw_auth.h"
#include "gw_policy.h"
#include "gw_ratelimit.h"
#include "gw_sanitize.h"
#include "gw_upstream.h"

typedef struct gw_server gw_server;

typedef struct gw_server_config {
    const char *listen_addr;      /* "0.0.0.0" */
    int port;                     /* 8443 */
    size_t max_body_bytes;        /* 1 MiB */
    size_t max_header_bytes;      /* 16 KiB */
    int header_timeout_ms;        /* whole request head must arrive within this */
    int io_timeout_ms;            /* a stalled read or write closes the connection */
    int max_connections;
    const char *const *models;    /* configured models, for /v1/models when the router */
    size_t n_models;              /* has not reported any */
} gw_server_config;

/* Counters the server keeps; main.c exports them as metrics. */
typedef struct gw_server_stats {
    unsigned long connections_open;
    unsigned long requests_in_flight;
} gw_server_stats;

/* What decides who may do what: authentication, the role policy and the rate limits.
 * main.c owns it; the server and the gRPC endpoint share it. */
typedef struct gw_access {
    gw_auth auth;
    gw_policy policy;
    gw_ratelimit *limits;
} gw_access;

/* Binds and starts serving on base. ssl_ctx, access and up must outlive the server.
 * Returns NULL with a message (address in use, ...). */
gw_server *gw_server_start(struct event_base *base, const gw_server_config *cfg,
                           SSL_CTX *ssl_ctx, gw_access *access, gw_upstream *up,
                           char *err, size_t errsz);

/* Every generation's prompt and output go through z (must outlive the server); set it
 * before the first request. */
void gw_server_set_sanitizer(gw_server *s, gw_sanitizer *z);

/* Stops accepting new connections (graceful drain starts). In-flight calls go on. */
void gw_server_stop_accepting(gw_server *s);

gw_server_stats gw_server_get_stats(const gw_server *s);

/* Frees the server; open connections are closed and their generations cancelled. */
void gw_server_free(gw_server *s);

#endif
