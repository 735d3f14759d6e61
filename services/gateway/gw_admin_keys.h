/* gw_admin_keys.h - the key management REST API under /admin/keys (permission "keys",
 * which only admin holds in the default policy). The same operations as
 * `citadel keys`, on the same store (common/apikeys.h):
 *
 *   GET    /admin/keys        {"object":"list","data":[key...]}        200
 *   POST   /admin/keys        {"roles":["user"], "models":["m"], "rpm":N, "tpm":N,
 *                              "expires_in":"30d" or seconds, "user":"alice", "id":"..."}
 *                             -> the key object plus "key": the full key, shown once   201
 *   DELETE /admin/keys/{id}   the key object, now revoked                       200
 *
 * A key object: {"id","object":"api_key","roles":[],"models":[],"user","rpm","tpm",
 * "created","expires","revoked","status":"live|expired|revoked"} (times in unix
 * seconds, null when unset). Knows nothing of sockets: gw_server hands it the method,
 * path and body and sends what it returns.
 */
#ifndef CITADEL_GW_ADMIN_KEYS_H
#define CITADEL_GW_ADMIN_KEYS_H

#include <stddef.h>

#include "apikeys.h"
#include "gw_openai.h"
#include "gw_policy.h"

/* Handles one /admin/keys request. Returns the HTTP status with *body (malloc'd JSON,
 * *len bytes) for success, or -1 with e set (400 bad body or unknown role, 404 unknown
 * key, 405, 500 store I/O). actor (the admin's key id) is only logged. */
int gw_admin_keys_handle(apikey_store *keys, const gw_policy *policy, const char *method,
                         const char *path, const char *body, size_t body_len, const char *actor,
                         char **out, size_t *out_len, gw_error *e);

#endif
