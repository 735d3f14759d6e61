/* gw_grpc.h - the gateway's gRPC endpoint: citadel.v1.Inference (proto/inference.proto)
 * over TLS on :8444, served with gRPC core's C API (libgrpc) and protobuf-c messages.
 *
 * Threads: gRPC core reports every finished operation on a completion queue. One
 * thread of ours waits on that queue and only hands each event to the gateway's
 * libevent loop (a locked list and a pipe); everything else - authentication, policy,
 * rate limits, the router link, building and sending messages - runs on the loop, like
 * the REST server, so the modules it shares with REST stay single-threaded.
 *
 * Per call: Generate (server streaming) authenticates the `authorization` metadata
 * like REST (gw_auth), needs the permission "chat" (with messages) or "completions"
 * (gw_policy), a model the caller may use, and passes the rate limiter (gw_ratelimit;
 * RESOURCE_EXHAUSTED with retry-after and x-ratelimit-* metadata otherwise); each
 * GenerateChunk from the router is sent on as it comes, one send at a time (gRPC
 * allows one outstanding send per call), and the stream ends with the final chunk and
 * status OK, or with the error's status. A client that cancels cancels the generation
 * (Cancel to the router). ListModels needs "models"; Health is open.
 */
#ifndef CITADEL_GW_GRPC_H
#define CITADEL_GW_GRPC_H

#include <stddef.h>

#include <event2/event.h>

#include "gw_server.h"
#include "gw_upstream.h"

typedef struct gw_grpc gw_grpc;

typedef struct gw_grpc_config {
    const char *listen_addr;   /* "0.0.0.0" */
    int port;                  /* 8444; 0: no gRPC endpoint */
    const char *cert_path;     /* PEM certificate chain (the REST server's) */
    const char *key_path;      /* its private key */
} gw_grpc_config;

/* Binds and starts serving; access and up must outlive it. NULL with a message (port
 * in use, unreadable certificate). */
gw_grpc *gw_grpc_start(struct event_base *base, const gw_grpc_config *cfg, gw_access *access,
                       gw_upstream *up, char *err, size_t errsz);

/* Stops taking new calls (drain); calls in progress go on. */
void gw_grpc_stop_accepting(gw_grpc *g);

/* Cancels what is left, waits for gRPC to hand every call back, and frees. Call it
 * before freeing the upstream. NULL-safe. */
/* Every Generate's prompt and output go through z (must outlive g); set before serving. */
void gw_grpc_set_sanitizer(gw_grpc *g, gw_sanitizer *z);
void gw_grpc_free(gw_grpc *g);

#endif
