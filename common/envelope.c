/* envelope.c - ZeroMQ multipart framing of protobuf messages (see envelope.h). */
#include "envelope.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

/* The type table: wire name and descriptor, indexed by envelope_type. */
static const struct {
    const char *name;
    const ProtobufCMessageDescriptor *descriptor;
} types[ENVELOPE_TYPE_COUNT] = {
    [ENVELOPE_UNKNOWN] = {"?", NULL},
    [ENVELOPE_GENERATE_REQUEST] = {"GenerateRequest", &citadel__generate_request__descriptor},
    [ENVELOPE_GENERATE_CHUNK] = {"GenerateChunk", &citadel__generate_chunk__descriptor},
    [ENVELOPE_CANCEL] = {"Cancel", &citadel__cancel__descriptor},
    [ENVELOPE_ERROR] = {"Error", &citadel__error__descriptor},
    [ENVELOPE_WORKER_HEARTBEAT] = {"WorkerHeartbeat", &citadel__worker_heartbeat__descriptor},
    [ENVELOPE_MODELS_REQUEST] = {"ModelsRequest", &citadel__models_request__descriptor},
    [ENVELOPE_MODEL_LIST] = {"ModelList", &citadel__model_list__descriptor},
    [ENVELOPE_SANITIZE_REQUEST] = {"SanitizeRequest", &citadel__sanitize_request__descriptor},
    [ENVELOPE_SANITIZE_RESPONSE] = {"SanitizeResponse", &citadel__sanitize_response__descriptor},
};

static void set_err(char *err, size_t errsz, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errsz, const char *fmt, ...)
{
    if (err == NULL || errsz == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errsz, fmt, ap);
    va_end(ap);
}

const char *envelope_type_name(envelope_type t)
{
    return (unsigned)t < ENVELOPE_TYPE_COUNT ? types[t].name : "?";
}

envelope_type envelope_type_parse(const void *name, size_t len)
{
    for (int t = 1; t < ENVELOPE_TYPE_COUNT; t++)
        if (strlen(types[t].name) == len && memcmp(types[t].name, name, len) == 0)
            return (envelope_type)t;
    return ENVELOPE_UNKNOWN;
}

envelope_type envelope_type_of(const ProtobufCMessage *msg)
{
    for (int t = 1; msg && t < ENVELOPE_TYPE_COUNT; t++)
        if (msg->descriptor == types[t].descriptor)
            return (envelope_type)t;
    return ENVELOPE_UNKNOWN;
}

const ProtobufCMessageDescriptor *envelope_descriptor(envelope_type t)
{
    return (unsigned)t < ENVELOPE_TYPE_COUNT ? types[t].descriptor : NULL;
}

const char *envelope_status_name(int status)
{
    switch (status) {
    case ENVELOPE_OK: return "ok";
    case ENVELOPE_TIMEOUT: return "timeout";
    case ENVELOPE_ERR_IO: return "io error";
    case ENVELOPE_ERR_FRAMING: return "bad framing";
    case ENVELOPE_ERR_UNKNOWN_TYPE: return "unknown message type";
    case ENVELOPE_ERR_DECODE: return "undecodable payload";
    default: return "?";
    }
}

/* ---- sending ------------------------------------------------------------------------ */

static int send_frame(void *sock, const void *data, size_t len, bool more, char *err, size_t errsz)
{
    if (zmq_send(sock, data, len, ZMQ_DONTWAIT | (more ? ZMQ_SNDMORE : 0)) >= 0)
        return ENVELOPE_OK;
    if (errno == EAGAIN)
        set_err(err, errsz, "send would block (no peer, or its queue is full)");
    else if (errno == EHOSTUNREACH)
        set_err(err, errsz, "send: the peer is gone (unknown routing identity)");
    else
        set_err(err, errsz, "send: %s", zmq_strerror(errno));
    return ENVELOPE_ERR_IO;
}

int envelope_send_raw(void *sock, const envelope_route *route, const char *type_name, const void *payload,
                      size_t len, char *err, size_t errsz)
{
    /* ZeroMQ delivers a multipart message whole or not at all, so a failure after the
     * first frame cannot leave half a message queued. */
    for (int i = 0; route && i < route->n && i < ENVELOPE_MAX_HOPS; i++)
        if (send_frame(sock, route->id[i], route->len[i], true, err, errsz))
            return ENVELOPE_ERR_IO;
    if (send_frame(sock, "", 0, true, err, errsz) || send_frame(sock, type_name, strlen(type_name), true, err, errsz) ||
        send_frame(sock, payload, len, false, err, errsz))
        return ENVELOPE_ERR_IO;
    return ENVELOPE_OK;
}

int envelope_send(void *sock, const envelope_route *route, const ProtobufCMessage *msg, char *err, size_t errsz)
{
    envelope_type t = envelope_type_of(msg);
    if (t == ENVELOPE_UNKNOWN) {
        set_err(err, errsz, "send: %s is not a message that travels alone",
                msg ? msg->descriptor->name : "NULL");
        return ENVELOPE_ERR_UNKNOWN_TYPE;
    }
    size_t len = protobuf_c_message_get_packed_size(msg);
    uint8_t small[512], *buf = len <= sizeof small ? small : malloc(len);
    if (buf == NULL) {
        set_err(err, errsz, "send: out of memory for a %zu-byte %s", len, types[t].name);
        return ENVELOPE_ERR_IO;
    }
    protobuf_c_message_pack(msg, buf);
    int rc = envelope_send_raw(sock, route, types[t].name, buf, len, err, errsz);
    if (buf != small)
        free(buf);
    return rc;
}

/* ---- receiving ---------------------------------------------------------------------- */

/* Where the frame parser is: identities until the empty frame, then type, then payload,
 * then nothing more. */
typedef enum frame_state { IN_ROUTE, AT_TYPE, AT_PAYLOAD, PAST_END } frame_state;

/* What reading the frames found; `status` is the first problem (ENVELOPE_OK if none). */
typedef struct frame_reader {
    frame_state state;
    int status;
    zmq_msg_t payload;
    bool have_payload;
} frame_reader;

static void framing_error(frame_reader *r, char *err, size_t errsz, const char *what)
{
    if (r->status == ENVELOPE_OK) {
        r->status = ENVELOPE_ERR_FRAMING;
        set_err(err, errsz, "bad framing: %s", what);
    }
}

/* Takes one frame; the payload frame is kept (moved into r), the others copied. */
static void take_frame(frame_reader *r, envelope *env, zmq_msg_t *m, char *err, size_t errsz)
{
    size_t len = zmq_msg_size(m);
    const void *data = zmq_msg_data(m);
    switch (r->state) {
    case IN_ROUTE:
        if (len == 0) {
            r->state = AT_TYPE;
        } else if (env->route.n == ENVELOPE_MAX_HOPS || len > ENVELOPE_MAX_IDENTITY) {
            framing_error(r, err, errsz, "too many or too long identity frames (no empty delimiter?)");
        } else {
            memcpy(env->route.id[env->route.n], data, len);
            env->route.len[env->route.n++] = len;
        }
        break;
    case AT_TYPE: {
        size_t n = len < sizeof env->type_name - 1 ? len : sizeof env->type_name - 1;
        memcpy(env->type_name, data, n);
        env->type_name[n] = '\0';
        env->type = envelope_type_parse(data, len);
        r->state = AT_PAYLOAD;
        break;
    }
    case AT_PAYLOAD:
        zmq_msg_move(&r->payload, m);
        r->have_payload = true;
        r->state = PAST_END;
        break;
    case PAST_END:
        framing_error(r, err, errsz, "frames after the payload");
        break;
    }
}

/* Reads every frame of the waiting message (the first without blocking: poll said it
 * is there; ZeroMQ delivers the rest with it). */
static int read_frames(void *sock, frame_reader *r, envelope *env, char *err, size_t errsz)
{
    int more = 1, first = 1;
    while (more) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, sock, first ? ZMQ_DONTWAIT : 0) < 0) {
            int e = errno;
            zmq_msg_close(&m);
            if (first && (e == EAGAIN || e == EINTR))
                return ENVELOPE_TIMEOUT;
            set_err(err, errsz, "receive: %s", zmq_strerror(e));
            return ENVELOPE_ERR_IO;
        }
        first = 0;
        more = zmq_msg_more(&m);
        take_frame(r, env, &m, err, errsz);
        zmq_msg_close(&m);
    }
    if (r->state != PAST_END)
        framing_error(r, err, errsz, r->state == IN_ROUTE ? "no empty delimiter frame" : "no payload frame");
    return r->status;
}

static int decode(envelope *env, const zmq_msg_t *payload, char *err, size_t errsz)
{
    env->payload_len = zmq_msg_size(payload);
    if (env->type == ENVELOPE_UNKNOWN) {
        set_err(err, errsz, "unknown message type '%s'", env->type_name);
        return ENVELOPE_ERR_UNKNOWN_TYPE;
    }
    env->msg = protobuf_c_message_unpack(types[env->type].descriptor, NULL, env->payload_len,
                                         zmq_msg_data((zmq_msg_t *)payload));
    if (env->msg == NULL) {
        set_err(err, errsz, "undecodable %s payload (%zu bytes)", env->type_name, env->payload_len);
        return ENVELOPE_ERR_DECODE;
    }
    return ENVELOPE_OK;
}

int envelope_recv(void *sock, int timeout_ms, envelope *env, char *err, size_t errsz)
{
    memset(env, 0, sizeof *env);
    zmq_pollitem_t item = {sock, 0, ZMQ_POLLIN, 0};
    int n = zmq_poll(&item, 1, timeout_ms);
    if (n == 0 || (n < 0 && errno == EINTR))
        return ENVELOPE_TIMEOUT;
    if (n < 0) {
        set_err(err, errsz, "poll: %s", zmq_strerror(errno));
        return ENVELOPE_ERR_IO;
    }
    frame_reader r = {.state = IN_ROUTE, .status = ENVELOPE_OK};
    zmq_msg_init(&r.payload);
    int rc = read_frames(sock, &r, env, err, errsz);
    if (rc == ENVELOPE_OK)
        rc = decode(env, &r.payload, err, errsz);
    zmq_msg_close(&r.payload);
    return rc;
}

void envelope_free(envelope *env)
{
    if (env && env->msg) {
        protobuf_c_message_free_unpacked(env->msg, NULL);
        env->msg = NULL;
    }
}

/* ---- errors ------------------------------------------------------------------------- */

void envelope_error_init(Citadel__Error *e, const char *request_id, Citadel__ErrorCode code, const char *origin,
                         const char *message)
{
    citadel__error__init(e);
    e->request_id = (char *)(request_id ? request_id : "");
    e->code = code;
    e->origin = (char *)(origin ? origin : "");
    e->message = (char *)(message ? message : "");
}

int envelope_reply_error(void *sock, const envelope_route *route, const char *request_id, Citadel__ErrorCode code,
                         const char *origin, const char *message, char *err, size_t errsz)
{
    Citadel__Error e;
    envelope_error_init(&e, request_id, code, origin, message);
    return envelope_send(sock, route, &e.base, err, errsz);
}

int envelope_error_http_status(Citadel__ErrorCode code)
{
    switch (code) {
    case CITADEL__ERROR_CODE__INVALID_ARGUMENT:
    case CITADEL__ERROR_CODE__UNAUTHENTICATED:
    case CITADEL__ERROR_CODE__PERMISSION_DENIED:
    case CITADEL__ERROR_CODE__NOT_FOUND:
    case CITADEL__ERROR_CODE__PAYLOAD_TOO_LARGE:
    case CITADEL__ERROR_CODE__RESOURCE_EXHAUSTED:
    case CITADEL__ERROR_CODE__CANCELLED:
    case CITADEL__ERROR_CODE__INTERNAL:
    case CITADEL__ERROR_CODE__UNIMPLEMENTED:
    case CITADEL__ERROR_CODE__UNAVAILABLE:
    case CITADEL__ERROR_CODE__DEADLINE_EXCEEDED:
        return (int)code;
    case CITADEL__ERROR_CODE__OVERLOADED:   /* "try again later": 503 with Retry-After */
        return 503;
    default:
        return 500;
    }
}
