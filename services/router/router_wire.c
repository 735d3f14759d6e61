/* router_wire.c - decoding the routing facts out of relayed messages and packing the
 * router's own Error and Cancel messages (see router_wire.h). */
#include "router_wire.h"

#include <stdlib.h>
#include <string.h>

#include "citadel.pb-c.h"

/* Copies s into out when it is non-empty and fits; the router refuses ids and names it
 * would otherwise have to truncate (they would stop matching). */
static int copy_field(const char *s, char *out, size_t cap)
{
    size_t len = s ? strlen(s) : 0;
    if (len == 0 || len >= cap)
        return -1;
    memcpy(out, s, len + 1);
    return 0;
}

int wire_read_request(const void *buf, size_t len, char *request_id, size_t id_cap, char *model,
                      size_t model_cap)
{
    Citadel__GenerateRequest *m = citadel__generate_request__unpack(NULL, len, buf);
    if (m == NULL)
        return -1;
    int rc = copy_field(m->request_id, request_id, id_cap) || copy_field(m->model, model, model_cap) ? -1 : 0;
    citadel__generate_request__free_unpacked(m, NULL);
    return rc;
}

int wire_read_cancel(const void *buf, size_t len, char *request_id, size_t id_cap)
{
    Citadel__Cancel *m = citadel__cancel__unpack(NULL, len, buf);
    if (m == NULL)
        return -1;
    int rc = copy_field(m->request_id, request_id, id_cap);
    citadel__cancel__free_unpacked(m, NULL);
    return rc;
}

int wire_read_chunk(const void *buf, size_t len, char *request_id, size_t id_cap, bool *last)
{
    Citadel__GenerateChunk *m = citadel__generate_chunk__unpack(NULL, len, buf);
    if (m == NULL)
        return -1;
    int rc = copy_field(m->request_id, request_id, id_cap);
    *last = m->finish_reason && m->finish_reason[0] != '\0';
    citadel__generate_chunk__free_unpacked(m, NULL);
    return rc;
}

int wire_read_error(const void *buf, size_t len, char *request_id, size_t id_cap)
{
    Citadel__Error *m = citadel__error__unpack(NULL, len, buf);
    if (m == NULL)
        return -1;
    int rc = copy_field(m->request_id, request_id, id_cap);
    citadel__error__free_unpacked(m, NULL);
    return rc;
}

int wire_read_heartbeat(const void *buf, size_t len, wire_heartbeat *out)
{
    memset(out, 0, sizeof *out);
    Citadel__WorkerHeartbeat *m = citadel__worker_heartbeat__unpack(NULL, len, buf);
    if (m == NULL)
        return -1;
    out->msg = m;
    const char *id = m->worker_id ? m->worker_id : "";
    size_t n = strlen(id) < REGISTRY_ID_MAX ? strlen(id) : REGISTRY_ID_MAX;
    memcpy(out->worker_id, id, n);
    out->worker_id[n] = '\0';
    out->beat.models = (const char *const *)m->models;
    out->beat.n_models = m->n_models > REGISTRY_MAX_MODELS ? REGISTRY_MAX_MODELS : (int)m->n_models;
    out->beat.free_slots = m->free_slots;
    out->beat.queue_depth = m->queue_depth;
    out->beat.load = m->load;
    return 0;
}

void wire_heartbeat_free(wire_heartbeat *hb)
{
    if (hb->msg)
        citadel__worker_heartbeat__free_unpacked(hb->msg, NULL);
    hb->msg = NULL;
}

static Citadel__ErrorCode error_code(enum wire_error_kind kind)
{
    switch (kind) {
    case WIRE_ERR_INVALID_ARGUMENT: return CITADEL__ERROR_CODE__INVALID_ARGUMENT;
    case WIRE_ERR_NOT_FOUND: return CITADEL__ERROR_CODE__NOT_FOUND;
    case WIRE_ERR_UNAVAILABLE: return CITADEL__ERROR_CODE__UNAVAILABLE;
    case WIRE_ERR_RESOURCE_EXHAUSTED: return CITADEL__ERROR_CODE__RESOURCE_EXHAUSTED;
    case WIRE_ERR_INTERNAL: break;
    }
    return CITADEL__ERROR_CODE__INTERNAL;
}

uint8_t *wire_pack_error(const char *request_id, enum wire_error_kind kind, const char *message, size_t *len)
{
    Citadel__Error m = CITADEL__ERROR__INIT;
    m.request_id = (char *)request_id;
    m.code = error_code(kind);
    m.message = (char *)message;
    *len = citadel__error__get_packed_size(&m);
    uint8_t *buf = malloc(*len ? *len : 1);
    if (buf)
        citadel__error__pack(&m, buf);
    return buf;
}

uint8_t *wire_pack_cancel(const char *request_id, size_t *len)
{
    Citadel__Cancel m = CITADEL__CANCEL__INIT;
    m.request_id = (char *)request_id;
    *len = citadel__cancel__get_packed_size(&m);
    uint8_t *buf = malloc(*len ? *len : 1);
    if (buf)
        citadel__cancel__pack(&m, buf);
    return buf;
}

uint8_t *wire_pack_model_list(const char *const *models, size_t n, size_t *len)
{
    Citadel__ModelList m = CITADEL__MODEL_LIST__INIT;
    m.models = (char **)models;
    m.n_models = n;
    *len = citadel__model_list__get_packed_size(&m);
    uint8_t *buf = malloc(*len ? *len : 1);
    if (buf)
        citadel__model_list__pack(&m, buf);
    return buf;
}
