/* router_wire.h - the little the router needs to read from, or write into, the
 * protobuf messages it relays (proto/citadel.proto).
 *
 * The router forwards GenerateRequests, Cancels and GenerateChunks as the bytes it
 * received; it decodes them only to learn routing facts (request id, model, whether a
 * chunk is the last one), and it builds Error and Cancel messages of its own. Keeping
 * those touches in one file keeps the rest of the router free of generated types.
 * Every decode returns -1 on bytes that do not parse (the caller answers with an Error
 * and counts it); nothing here crashes on hostile input.
 */
#ifndef CITADEL_ROUTER_WIRE_H
#define CITADEL_ROUTER_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "registry.h"

/* The type frame of each message kind. */
#define WIRE_GENERATE_REQUEST "GenerateRequest"
#define WIRE_GENERATE_CHUNK "GenerateChunk"
#define WIRE_CANCEL "Cancel"
#define WIRE_ERROR "Error"
#define WIRE_HEARTBEAT "WorkerHeartbeat"
#define WIRE_MODELS_REQUEST "ModelsRequest"
#define WIRE_MODEL_LIST "ModelList"

/* The error kinds the router reports (mapped onto the proto's codes when packed). */
enum wire_error_kind {
    WIRE_ERR_INVALID_ARGUMENT,   /* undecodable payload, unknown type, duplicate id */
    WIRE_ERR_NOT_FOUND,          /* no worker serves the model */
    WIRE_ERR_UNAVAILABLE,        /* no workers, all failed, draining, worker died */
    WIRE_ERR_RESOURCE_EXHAUSTED, /* too many requests in flight */
    WIRE_ERR_INTERNAL,
};

/* GenerateRequest: its id and model. */
int wire_read_request(const void *buf, size_t len, char *request_id, size_t id_cap, char *model,
                      size_t model_cap);
/* Cancel: its request id. */
int wire_read_cancel(const void *buf, size_t len, char *request_id, size_t id_cap);
/* GenerateChunk: its request id, and whether it ends the stream (has finish_reason). */
int wire_read_chunk(const void *buf, size_t len, char *request_id, size_t id_cap, bool *last);
/* Error: its request id (empty when the error is about no request). */
int wire_read_error(const void *buf, size_t len, char *request_id, size_t id_cap);

/* WorkerHeartbeat, decoded into a registry_beat. The beat's model names point into the
 * decoded message, so they live until wire_heartbeat_free. */
typedef struct wire_heartbeat {
    registry_beat beat;
    char worker_id[REGISTRY_ID_MAX + 1];
    void *msg;   /* the decoded protobuf message */
} wire_heartbeat;
int wire_read_heartbeat(const void *buf, size_t len, wire_heartbeat *out);
void wire_heartbeat_free(wire_heartbeat *hb);

/* Packs an Error / a Cancel. Returns a malloc'd buffer and
 * its length in *len, or NULL when out of memory. */
uint8_t *wire_pack_error(const char *request_id, enum wire_error_kind kind, const char *message, size_t *len);
uint8_t *wire_pack_cancel(const char *request_id, size_t *len);
/* Packs a ModelList of these n model names (the answer to a ModelsRequest). */
uint8_t *wire_pack_model_list(const char *const *models, size_t n, size_t *len);

#endif
