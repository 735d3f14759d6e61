/* gw_auth.c - bearer credentials to principals (see gw_auth.h). What looks like an API
 * key ("ck-" + 64 hex) is looked up in the hashed store; anything else goes to the JWT
 * verifier when one is configured, and to the store (to be refused) otherwise. */
#include "gw_auth.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "gw_jwt.h"
#include "gw_log.h"

static int unauthorized(gw_error *e, const char *code, const char *msg)
{
    gw_error_set(e, 401, "invalid_request_error", NULL, code, "%s", msg);
    return -1;
}

static void principal_from_key(const gw_auth *a, const apikey *k, gw_principal *who)
{
    memset(who, 0, sizeof *who);
    who->via = GW_AUTH_API_KEY;
    snprintf(who->key_id, sizeof who->key_id, "%s", k->key_id);
    snprintf(who->user, sizeof who->user, "%s", k->user[0] ? k->user : k->key_id);
    snprintf(who->roles, sizeof who->roles, "%s", k->roles);
    snprintf(who->models, sizeof who->models, "%s", k->models);
    who->rpm = k->rpm ? k->rpm : a->default_rpm;
    who->tpm = k->tpm ? k->tpm : a->default_tpm;
}

int gw_auth_bearer(gw_auth *a, const char *authorization, gw_principal *who, gw_error *e)
{
    if (authorization == NULL || strncasecmp(authorization, "Bearer ", 7) != 0)
        return unauthorized(e, "invalid_api_key", "missing API key: send 'Authorization: Bearer <key>'");
    const char *cred = authorization + 7;
    while (*cred == ' ') cred++;
    size_t len = strlen(cred);
    while (len > 0 && cred[len - 1] == ' ') len--;
    if (len == 0) return unauthorized(e, "invalid_api_key", "missing API key: send 'Authorization: Bearer <key>'");

    bool looks_like_key = len == APIKEY_LEN && strncmp(cred, APIKEY_PREFIX, 3) == 0;
    if (!looks_like_key && a->jwt != NULL) {
        char why[200];
        if (gw_jwt_verify(a->jwt, cred, len, time(NULL), who, why, sizeof why) != 0) {
            gw_log(GW_LOG_INFO, NULL, "JWT refused: %s", why);
            gw_error_set(e, 401, "invalid_request_error", NULL, "invalid_token", "invalid token: %s", why);
            return -1;
        }
        who->rpm = a->default_rpm;
        who->tpm = a->default_tpm;
        return 0;
    }
    char warn[256];
    if (apikeys_reload_if_changed(a->keys, warn, sizeof warn) < 0)
        gw_log(GW_LOG_WARN, NULL, "keys file reload failed: %s", warn);
    apikey_status status;
    const apikey *k = apikeys_verify(a->keys, cred, len, time(NULL), &status);
    switch (status) {
    case APIKEY_OK:
        principal_from_key(a, k, who);
        return 0;
    case APIKEY_EXPIRED:
        gw_log(GW_LOG_INFO, NULL, "expired API key refused: key_id=%s", k->key_id);
        return unauthorized(e, "expired_api_key", "API key expired");
    case APIKEY_REVOKED:
        gw_log(GW_LOG_INFO, NULL, "revoked API key refused: key_id=%s", k->key_id);
        return unauthorized(e, "revoked_api_key", "API key revoked");
    case APIKEY_UNKNOWN:
        break;
    }
    return unauthorized(e, "invalid_api_key", "incorrect API key provided");
}

bool gw_principal_may_use_model(const gw_principal *who, const char *model)
{
    return who->models[0] == '\0' || apikeys_list_has(who->models, model);
}
