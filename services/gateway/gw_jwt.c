/* gw_jwt.c - JWT verification (see gw_jwt.h): the header's algorithm checked against
 * the configured keys before libjwt verifies the signature, then the claims checked
 * with jansson. */
#include "gw_jwt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <jwt.h>
#include <openssl/evp.h>

#define MAX_TOKEN_BYTES 8192

struct gw_jwt {
    unsigned char *secret;  size_t secret_len;      /* HS256 */
    unsigned char *public_key;  size_t public_key_len;  /* RS256, PEM */
    char *issuer, *audience, *roles_claim, *role_map, *user_claim;
    int leeway_s;
};

void gw_jwt_free(gw_jwt *j)
{
    if (j == NULL) return;
    if (j->secret) {
        memset(j->secret, 0, j->secret_len);
        free(j->secret);
    }
    free(j->public_key);
    free(j->issuer);
    free(j->audience);
    free(j->roles_claim);
    free(j->role_map);
    free(j->user_claim);
    free(j);
}

static unsigned char *read_whole(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) return NULL;
    unsigned char *buf = malloc(65537);
    size_t n = buf ? fread(buf, 1, 65536, f) : 0;
    fclose(f);
    if (buf == NULL || n == 0 || n == 65536) {
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

gw_jwt *gw_jwt_new(const gw_jwt_config *cfg, char *err, size_t errsz)
{
    bool hs = cfg->hs256_secret && cfg->hs256_secret[0];
    bool rs = cfg->rs256_public_key && cfg->rs256_public_key[0];
    if (!hs && !rs) {
        snprintf(err, errsz, "JWT needs an HS256 secret or an RS256 public key");
        return NULL;
    }
    if (!cfg->issuer || !cfg->issuer[0] || !cfg->audience || !cfg->audience[0]) {
        snprintf(err, errsz, "JWT needs an issuer and an audience to check");
        return NULL;
    }
    gw_jwt *j = calloc(1, sizeof *j);
    if (j == NULL) goto oom;
    if (hs) {
        j->secret_len = strlen(cfg->hs256_secret);
        if (j->secret_len < 32) {
            snprintf(err, errsz, "the HS256 secret must be at least 32 bytes");
            gw_jwt_free(j);
            return NULL;
        }
        j->secret = (unsigned char *)strdup(cfg->hs256_secret);
        if (j->secret == NULL) goto oom;
    }
    if (rs) {
        j->public_key = read_whole(cfg->rs256_public_key, &j->public_key_len);
        if (j->public_key == NULL || strstr((char *)j->public_key, "PUBLIC KEY-----") == NULL) {
            snprintf(err, errsz, "cannot read an RS256 public key (PEM) from %s", cfg->rs256_public_key);
            gw_jwt_free(j);
            return NULL;
        }
    }
    j->issuer = strdup(cfg->issuer);
    j->audience = strdup(cfg->audience);
    j->roles_claim = strdup(cfg->roles_claim && cfg->roles_claim[0] ? cfg->roles_claim : "roles");
    j->role_map = strdup(cfg->role_map ? cfg->role_map : "");
    j->user_claim = strdup(cfg->user_claim && cfg->user_claim[0] ? cfg->user_claim : "sub");
    j->leeway_s = cfg->leeway_s;
    if (!j->issuer || !j->audience || !j->roles_claim || !j->role_map || !j->user_claim) goto oom;
    return j;
oom:
    gw_jwt_free(j);
    snprintf(err, errsz, "out of memory");
    return NULL;
}

/* Decodes the base64url header segment into a JSON object; NULL when it is not one. */
static json_t *decode_header(const char *token, size_t len)
{
    const char *dot = memchr(token, '.', len);
    if (dot == NULL || dot == token) return NULL;
    size_t n = (size_t)(dot - token);
    char *b64 = malloc(n + 4);
    unsigned char *raw = malloc(n + 4);
    json_t *h = NULL;
    if (b64 && raw) {
        for (size_t i = 0; i < n; i++) b64[i] = token[i] == '-' ? '+' : token[i] == '_' ? '/' : token[i];
        while (n % 4) b64[n++] = '=';
        int out = EVP_DecodeBlock(raw, (unsigned char *)b64, (int)n);
        if (out > 0) {
            size_t pad = 0;   /* EVP_DecodeBlock counts the padding's zero bytes */
            for (size_t i = n; i > 0 && b64[i - 1] == '='; i--) pad++;
            h = json_loadb((char *)raw, (size_t)out - pad, 0, NULL);
        }
    }
    free(b64);
    free(raw);
    if (h && !json_is_object(h)) {
        json_decref(h);
        h = NULL;
    }
    return h;
}

/* The claim at a dotted path ("realm_access.roles") of claims, or NULL. */
static json_t *claim_at(json_t *claims, const char *path)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", path);
    json_t *v = claims;
    char *save = NULL;
    for (char *part = strtok_r(buf, ".", &save); part && v; part = strtok_r(NULL, ".", &save))
        v = json_is_object(v) ? json_object_get(v, part) : NULL;
    return v;
}

/* The role for a claim value: itself without a map, the mapped role, or NULL. */
static const char *map_role(const gw_jwt *j, const char *value, char *out, size_t outsz)
{
    if (j->role_map[0] == '\0') return apikeys_valid_word(value, outsz) ? value : NULL;
    size_t vl = strlen(value);
    for (const char *p = j->role_map; *p;) {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        const char *eq = memchr(p, '=', n);
        if (eq && (size_t)(eq - p) == vl && memcmp(p, value, vl) == 0) {
            size_t rl = n - vl - 1;
            if (rl == 0 || rl >= outsz) return NULL;
            memcpy(out, eq + 1, rl);
            out[rl] = '\0';
            return apikeys_valid_word(out, outsz) ? out : NULL;
        }
        if (end == NULL) break;
        p = end + 1;
    }
    return NULL;
}

/* Adds value's role (if any, and not there yet) to the comma list roles. */
static void add_role(const gw_jwt *j, const char *value, char *roles, size_t cap)
{
    char mapped[APIKEY_ID_MAX];
    const char *r = map_role(j, value, mapped, sizeof mapped);
    if (r == NULL || apikeys_list_has(roles, r)) return;
    size_t used = strlen(roles);
    if (used + strlen(r) + 2 > cap) return;
    snprintf(roles + used, cap - used, "%s%s", used ? "," : "", r);
}

static void collect_roles(const gw_jwt *j, json_t *claim, char *roles, size_t cap)
{
    roles[0] = '\0';
    if (json_is_array(claim)) {
        size_t i;
        json_t *item;
        json_array_foreach(claim, i, item)
            if (json_is_string(item)) add_role(j, json_string_value(item), roles, cap);
    } else if (json_is_string(claim)) {
        char buf[1024];
        snprintf(buf, sizeof buf, "%s", json_string_value(claim));
        char *save = NULL;
        for (char *t = strtok_r(buf, " ,", &save); t; t = strtok_r(NULL, " ,", &save)) add_role(j, t, roles, cap);
    }
}

static bool audience_matches(json_t *aud, const char *want)
{
    if (json_is_string(aud)) return strcmp(json_string_value(aud), want) == 0;
    size_t i;
    json_t *item;
    if (json_is_array(aud))
        json_array_foreach(aud, i, item)
            if (json_is_string(item) && strcmp(json_string_value(item), want) == 0) return true;
    return false;
}

/* Checks the claims and fills who; 0 or -1 with why. */
static int check_claims(const gw_jwt *j, json_t *c, time_t now, gw_principal *who, char *why, size_t whysz)
{
    json_t *exp = json_object_get(c, "exp"), *nbf = json_object_get(c, "nbf");
    if (!json_is_integer(exp) && !json_is_real(exp)) {
        snprintf(why, whysz, "no exp claim");
        return -1;
    }
    if ((double)now >= json_number_value(exp) + j->leeway_s) {
        snprintf(why, whysz, "token expired");
        return -1;
    }
    if (nbf && (json_is_integer(nbf) || json_is_real(nbf)) && (double)now + j->leeway_s < json_number_value(nbf)) {
        snprintf(why, whysz, "token not valid yet (nbf)");
        return -1;
    }
    const char *iss = json_string_value(json_object_get(c, "iss"));
    if (iss == NULL || strcmp(iss, j->issuer) != 0) {
        snprintf(why, whysz, "wrong issuer");
        return -1;
    }
    if (!audience_matches(json_object_get(c, "aud"), j->audience)) {
        snprintf(why, whysz, "wrong audience");
        return -1;
    }
    const char *user = json_string_value(claim_at(c, j->user_claim));
    if (user == NULL || user[0] == '\0' || strlen(user) >= sizeof who->user) {
        snprintf(why, whysz, "no usable %s claim", j->user_claim);
        return -1;
    }
    memset(who, 0, sizeof *who);
    who->via = GW_AUTH_JWT;
    snprintf(who->user, sizeof who->user, "%s", user);
    snprintf(who->key_id, sizeof who->key_id, "jwt:%.*s", (int)(sizeof who->key_id - 5), user);
    collect_roles(j, claim_at(c, j->roles_claim), who->roles, sizeof who->roles);
    if (who->roles[0] == '\0') {
        snprintf(why, whysz, "the %s claim maps to no role", j->roles_claim);
        return -1;
    }
    return 0;
}

int gw_jwt_verify(const gw_jwt *j, const char *token, size_t len, time_t now, gw_principal *who,
                  char *why, size_t whysz)
{
    if (len == 0 || len > MAX_TOKEN_BYTES || memchr(token, '\0', len)) {
        snprintf(why, whysz, "malformed token");
        return -1;
    }
    json_t *header = decode_header(token, len);
    const char *alg = header ? json_string_value(json_object_get(header, "alg")) : NULL;
    const unsigned char *key = NULL;
    size_t key_len = 0;
    jwt_alg_t want = JWT_ALG_INVAL;
    if (alg && strcmp(alg, "HS256") == 0 && j->secret) {
        key = j->secret, key_len = j->secret_len, want = JWT_ALG_HS256;
    } else if (alg && strcmp(alg, "RS256") == 0 && j->public_key) {
        key = j->public_key, key_len = j->public_key_len, want = JWT_ALG_RS256;
    }
    if (key == NULL) {
        if (header) snprintf(why, whysz, "algorithm '%.20s' not accepted", alg ? alg : "?");
        else snprintf(why, whysz, "malformed token");
        json_decref(header);
        return -1;
    }
    json_decref(header);
    char *copy = strndup(token, len);
    jwt_t *jwt = NULL;
    int rc = copy ? jwt_decode(&jwt, copy, key, (int)key_len) : -1;
    free(copy);
    if (rc != 0 || jwt == NULL || jwt_get_alg(jwt) != want) {
        snprintf(why, whysz, "bad signature");
        jwt_free(jwt);
        return -1;
    }
    char *claims_text = jwt_get_grants_json(jwt, NULL);
    jwt_free(jwt);
    json_t *claims = claims_text ? json_loads(claims_text, 0, NULL) : NULL;
    free(claims_text);
    if (!json_is_object(claims)) {
        json_decref(claims);
        snprintf(why, whysz, "malformed claims");
        return -1;
    }
    rc = check_claims(j, claims, now, who, why, whysz);
    json_decref(claims);
    return rc;
}
