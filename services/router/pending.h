/* pending.h - the router's table of requests in flight: who asked, which worker has
 * it, and what to resend if that worker dies.
 *
 * A request's packed GenerateRequest is kept until its first chunk arrives: until then
 * nothing has reached the client, so a dead worker's request can be sent again to
 * another worker without the client seeing a seam. After the first chunk the bytes are
 * dropped, and a worker death ends the request with an error. Pure bookkeeping: no
 * sockets, no protobuf; main.c decides what to send.
 */
#ifndef CITADEL_ROUTER_PENDING_H
#define CITADEL_ROUTER_PENDING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PENDING_ID_MAX 64          /* bytes of a ZeroMQ identity */
#define PENDING_REQUEST_ID_MAX 128 /* bytes of a request id, NUL included */
#define PENDING_MODEL_MAX 128
#define PENDING_MAX_ATTEMPTS 3     /* workers tried before the request fails */
#define PENDING_MAX 4096           /* requests in flight before new ones are refused */

/* One request in flight.
 *   client/client_len   the gateway's identity on the frontend socket
 *   worker/worker_len   the identity of the worker that has it now
 *   tried[]             identities already given this request, so a retry goes elsewhere
 *   payload             the packed GenerateRequest, NULL once started
 *   started             a chunk has gone back to the client
 *   cancelled           the client cancelled: never retried */
typedef struct pending_request {
    char request_id[PENDING_REQUEST_ID_MAX];
    char model[PENDING_MODEL_MAX];
    char client[PENDING_ID_MAX];
    size_t client_len;
    char worker[PENDING_ID_MAX];
    size_t worker_len;
    char tried[PENDING_MAX_ATTEMPTS][PENDING_ID_MAX];
    size_t tried_len[PENDING_MAX_ATTEMPTS];
    int attempts;
    uint8_t *payload;
    size_t payload_len;
    bool started, cancelled;
    double created;
} pending_request;

/* An unordered set of requests (swap-remove), owned entries. */
typedef struct pending_table {
    pending_request **items;
    int n, cap;
} pending_table;

void pending_init(pending_table *t);
/* Frees every entry and the table's storage. */
void pending_free(pending_table *t);

enum pending_add_result {
    PENDING_ADDED = 0,
    PENDING_DUPLICATE,  /* a request with this id is already in flight */
    PENDING_FULL,       /* PENDING_MAX reached */
    PENDING_BAD,        /* empty or too long id/model/identity */
    PENDING_NOMEM,
};

/* Adds a request (copies everything). *out is the new entry on PENDING_ADDED. */
enum pending_add_result pending_add(pending_table *t, const char *request_id, const char *model,
                                    const void *client, size_t client_len, const void *payload,
                                    size_t payload_len, double now, pending_request **out);

/* The request with this id, or NULL. */
pending_request *pending_find(pending_table *t, const char *request_id);

/* Removes and frees the entry (which must be in t). */
void pending_remove(pending_table *t, pending_request *p);

/* Records that the request was sent to this worker (an attempt). Returns false when the
 * attempts are used up or the identity is too long; nothing changes then. */
bool pending_assign(pending_request *p, const void *worker, size_t worker_len);

/* Whether this worker was already given the request. */
bool pending_tried(const pending_request *p, const void *worker, size_t worker_len);

/* Whether the request is now held by this worker. */
bool pending_on_worker(const pending_request *p, const void *worker, size_t worker_len);

/* The first chunk went back to the client: the request can no longer be retried, so
 * its bytes are dropped. */
void pending_mark_started(pending_request *p);

/* Whether a death of its worker can be hidden by sending it elsewhere. */
bool pending_can_retry(const pending_request *p);

/* Fills out[0..cap) with the requests held by this worker; returns how many there are
 * (which may exceed cap). The pointers stay valid until the table changes. */
int pending_on_worker_list(pending_table *t, const void *worker, size_t worker_len,
                           pending_request **out, int cap);

#endif
