/* envelope.h - sending and receiving Citadel's protobuf messages over ZeroMQ.
 *
 * Every message on the wire is one multipart ZeroMQ message (DESIGN.md, "Wire
 * contracts"):
 *
 *   [identity ...][empty][type][payload]
 *
 * identity frames are what ROUTER sockets add, one per ROUTER hop, to route replies
 * back (none on a DEALER); the empty frame separates them from the body; type is the
 * message's name in proto/citadel.proto ("GenerateRequest"); payload its protobuf
 * encoding. A receiver keeps the identities (envelope_route) and hands them back to
 * envelope_send to answer the sender.
 *
 * Receiving never crashes on what a peer sends: bad framing, an unknown type or an
 * undecodable payload come back as distinct status codes with a message, the route
 * filled in whenever the frames allowed it, so that the caller can log, count and
 * answer with an Error (envelope_reply_error) as the contract requires:
 *
 *   envelope env;
 *   char err[256];
 *   int rc = envelope_recv(sock, 100, &env, err, sizeof err);
 *   if (rc == ENVELOPE_TIMEOUT) return;                            // or a signal arrived
 *   if (rc == ENVELOPE_ERR_UNKNOWN_TYPE || rc == ENVELOPE_ERR_DECODE) {
 *       log_msg(LOG_WARN, NULL, "%s", err);  metrics_counter_inc(bad_messages);
 *       envelope_reply_error(sock, &env.route, "", CITADEL__ERROR_CODE__INVALID_ARGUMENT, "router", err, NULL, 0);
 *   } else if (rc == ENVELOPE_OK && env.type == ENVELOPE_CANCEL) {
 *       Citadel__Cancel *c = (Citadel__Cancel *)env.msg; ...
 *   }
 *   envelope_free(&env);                                            // after any rc
 *
 * Sends never block: a peer that cannot take the message (gone, or its queue full)
 * is an ENVELOPE_ERR_IO the caller decides about. Cap what a peer may send with
 * ZMQ_MAXMSGSIZE on the socket; the envelope does not.
 */
#ifndef CITADEL_ENVELOPE_H
#define CITADEL_ENVELOPE_H

#include <stdbool.h>
#include <stddef.h>

#include "citadel.pb-c.h"

/* The message types, one per top-level message that travels alone. */
typedef enum envelope_type {
    ENVELOPE_UNKNOWN = 0,
    ENVELOPE_GENERATE_REQUEST,
    ENVELOPE_GENERATE_CHUNK,
    ENVELOPE_CANCEL,
    ENVELOPE_ERROR,
    ENVELOPE_WORKER_HEARTBEAT,
    ENVELOPE_MODELS_REQUEST,           /* gateway -> router: which models are served? */
    ENVELOPE_MODEL_LIST,               /* router -> gateway: the answer */
    ENVELOPE_SANITIZE_REQUEST,         /* gateway, trainer -> sanitizer */
    ENVELOPE_SANITIZE_RESPONSE,        /* sanitizer -> its caller */
    ENVELOPE_TYPE_COUNT
} envelope_type;

/* envelope_recv's and envelope_send's results. */
enum envelope_status {
    ENVELOPE_OK = 0,
    ENVELOPE_TIMEOUT = 1,              /* nothing within the timeout, or a signal interrupted */
    ENVELOPE_ERR_IO = -1,              /* ZeroMQ failed (socket closed, peer unreachable, ...) */
    ENVELOPE_ERR_FRAMING = -2,         /* not [identity...][empty][type][payload] */
    ENVELOPE_ERR_UNKNOWN_TYPE = -3,    /* type frame names no known message */
    ENVELOPE_ERR_DECODE = -4,          /* payload is not a valid protobuf of its type */
};

#define ENVELOPE_MAX_HOPS 4            /* identity frames kept; more is a framing error */
#define ENVELOPE_MAX_IDENTITY 255      /* ZeroMQ's limit on a routing id */

/* The identity frames of a received message, in arrival order: the way back. A route
 * with n == 0 (a DEALER's) sends no identity frames. Plain data: copy it freely. */
typedef struct envelope_route {
    int n;
    size_t len[ENVELOPE_MAX_HOPS];
    unsigned char id[ENVELOPE_MAX_HOPS][ENVELOPE_MAX_IDENTITY];
} envelope_route;

/* A received message. msg is set only for ENVELOPE_OK, and owned: envelope_free. */
typedef struct envelope {
    envelope_route route;
    envelope_type type;
    char type_name[64];                /* the type frame as received (cut to 63 bytes), for logs */
    ProtobufCMessage *msg;             /* cast to the type's struct: (Citadel__Cancel *)env.msg */
    size_t payload_len;
} envelope;

/* "GenerateRequest", ...; "?" for ENVELOPE_UNKNOWN or out of range. */
const char *envelope_type_name(envelope_type t);
/* The type named by the len bytes at name; ENVELOPE_UNKNOWN when none. */
envelope_type envelope_type_parse(const void *name, size_t len);
/* The type of a message by its descriptor; ENVELOPE_UNKNOWN for other messages. */
envelope_type envelope_type_of(const ProtobufCMessage *msg);
/* The protobuf-c descriptor of a type; NULL for ENVELOPE_UNKNOWN. */
const ProtobufCMessageDescriptor *envelope_descriptor(envelope_type t);
/* "ok", "timeout", "io error", ... for logs. */
const char *envelope_status_name(int status);

/* Packs msg and sends [route...][empty][type][payload] on sock without blocking. route
 * may be NULL (no identities: a DEALER talking to its ROUTER). Returns ENVELOPE_OK, or
 * ENVELOPE_ERR_IO / ENVELOPE_ERR_UNKNOWN_TYPE with a message in err (err may be NULL). */
int envelope_send(void *sock, const envelope_route *route, const ProtobufCMessage *msg, char *err, size_t errsz);
/* The same with a type name and payload as given, unchecked: for relaying a payload
 * without decoding it, and for tests that must send what a broken peer would. */
int envelope_send_raw(void *sock, const envelope_route *route, const char *type_name, const void *payload,
                      size_t len, char *err, size_t errsz);

/* Waits up to timeout_ms (-1: forever, 0: only what is there) for one message and
 * reads all of its frames. Returns ENVELOPE_OK with env->msg decoded, ENVELOPE_TIMEOUT,
 * or an error with a message in err naming what was wrong. env is always initialised:
 * call envelope_free whatever the result. */
int envelope_recv(void *sock, int timeout_ms, envelope *env, char *err, size_t errsz);
/* Frees env->msg; env can be reused. */
void envelope_free(envelope *env);

/* Fills e (initialising it) as an Error; the strings are borrowed, NULL taken as "". */
void envelope_error_init(Citadel__Error *e, const char *request_id, Citadel__ErrorCode code, const char *origin,
                         const char *message);
/* Sends such an Error along route (the sender of a received message). Returns like
 * envelope_send. */
int envelope_reply_error(void *sock, const envelope_route *route, const char *request_id, Citadel__ErrorCode code,
                         const char *origin, const char *message, char *err, size_t errsz);
/* The HTTP status for a code (the enum's numbers are the statuses, except OVERLOADED:
 * 503; UNKNOWN and anything unlisted are 500). */
int envelope_error_http_status(Citadel__ErrorCode code);

#endif
