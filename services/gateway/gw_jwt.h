/* gw_jwt.h - bearer JWTs as an alternative to API keys (libjwt): HS256 with a shared
 * secret and/or RS256 with the issuer's public key; the issuer, the audience and the
 * expiry are checked, and one claim (a list of group or role names) is mapped to
 * Citadel roles.
 *
 * Which algorithm a token may use is decided here, never by the token: its header's
 * "alg" must be HS256 with a secret configured or RS256 with a public key configured,
 * and the token is verified with that key only ("none" and every other algorithm are
 * refused, and an RS256 public key is never used as an HMAC secret).
 *
 * Claims: "exp" is required and must be in the future, "nbf" (when present) in the
 * past, both with `leeway_s` of slack; "iss" must equal the issuer; "aud" (a string or
 * an array) must hold the audience. The roles claim may be a dotted path
 * ("realm_access.roles") to an array of strings or one space/comma-separated string.
 * With a role map ("group=role,other=role2") each value is translated and unmapped
 * values are dropped; without one the values are the roles. The user is the user
 * claim ("sub" by default); the principal's key id is "jwt:<user>", so limits are
 * kept per subject.
 */
#ifndef CITADEL_GW_JWT_H
#define CITADEL_GW_JWT_H

#include <stddef.h>
#include <time.h>

#include "gw_auth.h"

typedef struct gw_jwt_config {
    const char *hs256_secret;        /* "" = HS256 off */
    const char *rs256_public_key;    /* PEM file; "" = RS256 off */
    const char *issuer;              /* required */
    const char *audience;            /* required */
    const char *roles_claim;         /* "roles" */
    const char *role_map;            /* "" or "claim_value=role,..." */
    const char *user_claim;          /* "sub" */
    int leeway_s;
} gw_jwt_config;

/* Checks the configuration and reads the public key. NULL with a message when neither
 * key is set, a key file cannot be read, or the issuer or audience is missing. */
gw_jwt *gw_jwt_new(const gw_jwt_config *cfg, char *err, size_t errsz);
void gw_jwt_free(gw_jwt *j);

/* Verifies token[0..len) at time now and fills who (via, key_id, user, roles; no
 * limits). Returns 0, or -1 with why (safe to log and to show: it never contains the
 * token or a key). */
int gw_jwt_verify(const gw_jwt *j, const char *token, size_t len, time_t now, gw_principal *who,
                  char *why, size_t whysz);

#endif
