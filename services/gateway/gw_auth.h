/* gw_auth.h - who is calling: turns an "Authorization: Bearer …" value (REST header or
 * gRPC metadata) into a gw_principal, from an API key (common/apikeys.h) or, when JWT
 * is configured, a signed token (gw_jwt.h).
 *
 * The principal is the per-request record of identity: gw_server keeps one on every
 * call, and audit, limits and the model check read it there. It holds no secret.
 */
#ifndef CITADEL_GW_AUTH_H
#define CITADEL_GW_AUTH_H

#include <stdbool.h>
#include <stdint.h>

#include "apikeys.h"
#include "gw_openai.h"

typedef struct gw_jwt gw_jwt;

/* How a principal proved itself. */
enum gw_auth_via { GW_AUTH_API_KEY, GW_AUTH_JWT };

/* An authenticated caller. For API keys key_id is the key's id; for JWTs it is
 * "jwt:<user>" so that limits are kept per token subject. */
typedef struct gw_principal {
    enum gw_auth_via via;
    char key_id[APIKEY_ID_MAX + 8];
    char user[APIKEY_USER_MAX + 64];
    char roles[APIKEY_ROLES_MAX];      /* comma-separated */
    char models[APIKEY_MODELS_MAX];    /* comma-separated; "" = every model */
    int64_t rpm, tpm;                  /* effective limits; 0 = unlimited */
} gw_principal;

/* What authentication needs: the key store (reloaded when its file changes), the JWT
 * verifier (NULL: JWT off) and the limits for keys and tokens that name none. */
typedef struct gw_auth {
    apikey_store *keys;
    const gw_jwt *jwt;
    int64_t default_rpm, default_tpm;
} gw_auth;

/* Authenticates an Authorization value ("Bearer <key or token>"; NULL when absent).
 * Returns 0 with *who filled, or -1 with e set to a 401 whose message says why
 * (missing, unknown, expired, revoked, bad token). Never logs the credential. */
int gw_auth_bearer(gw_auth *a, const char *authorization, gw_principal *who, gw_error *e);

/* Whether who may use model (its list is empty, or holds the model). */
bool gw_principal_may_use_model(const gw_principal *who, const char *model);

#endif
