/* gw_admin_keys.c - /admin/keys (see gw_admin_keys.h): JSON in and out with jansson,
 * the store's create/revoke underneath. */
#include "gw_admin_keys.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <openssl/crypto.h>

#include "gw_log.h"

#define KEYS_PATH "/admin/keys"

/* A comma-separated list as a JSON array of strings. */
static json_t *list_array(const char *list)
{
    json_t *a = json_array();
    for (const char *p = list; a && *p;) {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        json_array_append_new(a, json_stringn(p, n));
        if (end == NULL) break;
        p = end + 1;
    }
    return a;
}

static json_t *time_or_null(int64_t t)
{
    return t ? json_integer((json_int_t)t) : json_null();
}

static json_t *key_object(const apikey *k, time_t now)
{
    return json_pack("{s:s, s:s, s:o, s:o, s:s, s:I, s:I, s:o, s:o, s:o, s:s}",
                     "id", k->key_id, "object", "api_key", "roles", list_array(k->roles),
                     "models", list_array(k->models), "user", k->user[0] ? k->user : k->key_id,
                     "rpm", (json_int_t)k->rpm, "tpm", (json_int_t)k->tpm,
                     "created", time_or_null(k->created), "expires", time_or_null(k->expires),
                     "revoked", time_or_null(k->revoked), "status", apikeys_state(k, now));
}

/* Dumps j (stolen) into *out; returns status or -1 (500) when memory runs out. */
static int reply(json_t *j, int status, char **out, size_t *out_len, gw_error *e)
{
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (s == NULL) {
        gw_error_set(e, 500, "server_error", NULL, NULL, "out of memory");
        return -1;
    }
    *out = s;
    *out_len = strlen(s);
    return status;
}

static int bad_request(gw_error *e, const char *param, const char *msg)
{
    gw_error_set(e, 400, "invalid_request_error", param, "invalid_value", "%s", msg);
    return -1;
}

/* Joins a JSON array of words (or one string) into a comma list in buf. */
static int join_words(json_t *v, const char *param, char *buf, size_t cap, gw_error *e)
{
    buf[0] = '\0';
    if (json_is_string(v)) {
        if (!apikeys_valid_word(json_string_value(v), cap)) return bad_request(e, param, "not a valid name");
        snprintf(buf, cap, "%s", json_string_value(v));
        return 0;
    }
    if (!json_is_array(v)) return bad_request(e, param, "must be an array of names");
    size_t i, used = 0;
    json_t *item;
    json_array_foreach(v, i, item) {
        const char *s = json_string_value(item);
        if (s == NULL || !apikeys_valid_word(s, cap) || used + strlen(s) + 2 > cap)
            return bad_request(e, param, "must be an array of names");
        used += (size_t)snprintf(buf + used, cap - used, "%s%s", used ? "," : "", s);
    }
    return 0;
}

static int parse_limit(json_t *v, const char *param, int64_t *out, gw_error *e)
{
    if (v == NULL || json_is_null(v)) return 0;
    if (!json_is_integer(v) || json_integer_value(v) < 0) return bad_request(e, param, "must be a non-negative integer");
    *out = (int64_t)json_integer_value(v);
    return 0;
}

/* The POST body into a key template; 0 or -1 with e set. */
static int parse_create(const gw_policy *policy, json_t *j, apikey *k, gw_error *e)
{
    memset(k, 0, sizeof *k);
    const char *key;
    json_t *v;
    json_object_foreach(j, key, v) {
        if (strcmp(key, "roles") && strcmp(key, "role") && strcmp(key, "models") && strcmp(key, "rpm") &&
            strcmp(key, "tpm") && strcmp(key, "expires_in") && strcmp(key, "user") && strcmp(key, "id"))
            return bad_request(e, key, "unknown field");
    }
    json_t *roles = json_object_get(j, "roles");
    if (roles == NULL) roles = json_object_get(j, "role");
    if (roles == NULL) return bad_request(e, "roles", "roles is required");
    if (join_words(roles, "roles", k->roles, sizeof k->roles, e) != 0) return -1;
    if (k->roles[0] == '\0') return bad_request(e, "roles", "at least one role is required");
    char one[APIKEY_ROLES_MAX];
    snprintf(one, sizeof one, "%s", k->roles);
    char *save = NULL;
    for (char *r = strtok_r(one, ",", &save); r; r = strtok_r(NULL, ",", &save))
        if (!gw_policy_has_role(policy, r)) {
            gw_error_set(e, 400, "invalid_request_error", "roles", "unknown_role", "no role '%s' in the policy", r);
            return -1;
        }
    if ((v = json_object_get(j, "models")) && !json_is_null(v) &&
        join_words(v, "models", k->models, sizeof k->models, e) != 0)
        return -1;
    if (parse_limit(json_object_get(j, "rpm"), "rpm", &k->rpm, e) || parse_limit(json_object_get(j, "tpm"), "tpm", &k->tpm, e))
        return -1;
    if ((v = json_object_get(j, "user")) && !json_is_null(v)) {
        if (!json_is_string(v) || !apikeys_valid_word(json_string_value(v), sizeof k->user))
            return bad_request(e, "user", "must be a name (letters, digits, -_.:/@)");
        snprintf(k->user, sizeof k->user, "%s", json_string_value(v));
    }
    if ((v = json_object_get(j, "id")) && !json_is_null(v)) {
        if (!json_is_string(v) || !apikeys_valid_word(json_string_value(v), sizeof k->key_id))
            return bad_request(e, "id", "must be a name (letters, digits, -_.:/@)");
        snprintf(k->key_id, sizeof k->key_id, "%s", json_string_value(v));
    }
    if ((v = json_object_get(j, "expires_in")) && !json_is_null(v)) {
        int64_t secs = 0;
        if (json_is_integer(v) && json_integer_value(v) > 0) secs = (int64_t)json_integer_value(v);
        else if (!json_is_string(v) || apikeys_parse_duration(json_string_value(v), &secs) != 0)
            return bad_request(e, "expires_in", "must be seconds or a duration like \"30d\", \"12h\"");
        k->expires = (int64_t)time(NULL) + secs;
    }
    return 0;
}

static int create_key(apikey_store *keys, const gw_policy *policy, const char *body, size_t len,
                      const char *actor, char **out, size_t *out_len, gw_error *e)
{
    json_error_t jerr;
    json_t *j = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(j)) {
        json_decref(j);
        return bad_request(e, NULL, "the body must be a JSON object");
    }
    apikey tmpl, made;
    int rc = parse_create(policy, j, &tmpl, e);
    json_decref(j);
    if (rc != 0) return -1;
    char key[APIKEY_LEN + 1], err[300];
    if (apikeys_create(keys, &tmpl, key, &made, err, sizeof err) != 0) {
        bool exists = strstr(err, "exists") != NULL;
        gw_error_set(e, exists ? 409 : 500, exists ? "invalid_request_error" : "server_error",
                     exists ? "id" : NULL, NULL, "%s", err);
        return -1;
    }
    json_t *o = key_object(&made, time(NULL));
    if (o) json_object_set_new(o, "key", json_string(key));
    OPENSSL_cleanse(key, sizeof key);
    gw_log(GW_LOG_INFO, NULL, "API key created: key_id=%s roles=%s by %s", made.key_id, made.roles, actor);
    int status = reply(o, 201, out, out_len, e);
    return status;
}

static int list_keys(apikey_store *keys, char **out, size_t *out_len, gw_error *e)
{
    char warn[256];
    if (apikeys_reload_if_changed(keys, warn, sizeof warn) < 0)
        gw_log(GW_LOG_WARN, NULL, "keys file reload failed: %s", warn);
    time_t now = time(NULL);
    json_t *data = json_array();
    for (size_t i = 0; data && i < keys->n; i++) json_array_append_new(data, key_object(&keys->keys[i], now));
    return reply(json_pack("{s:s, s:o}", "object", "list", "data", data), 200, out, out_len, e);
}

static int revoke_key(apikey_store *keys, const char *id, const char *actor, char **out, size_t *out_len,
                      gw_error *e)
{
    char err[300];
    int rc = apikeys_revoke(keys, id, time(NULL), err, sizeof err);
    if (rc < 0) {
        bool unknown = apikeys_find(keys, id) == NULL;
        gw_error_set(e, unknown ? 404 : 500, unknown ? "invalid_request_error" : "server_error", NULL,
                     unknown ? "key_not_found" : NULL, "%s", unknown ? "no such key" : err);
        return -1;
    }
    if (rc == 0) gw_log(GW_LOG_INFO, NULL, "API key revoked: key_id=%s by %s", id, actor);
    return reply(key_object(apikeys_find(keys, id), time(NULL)), 200, out, out_len, e);
}

int gw_admin_keys_handle(apikey_store *keys, const gw_policy *policy, const char *method,
                         const char *path, const char *body, size_t body_len, const char *actor,
                         char **out, size_t *out_len, gw_error *e)
{
    size_t base = strlen(KEYS_PATH);
    if (strcmp(path, KEYS_PATH) == 0 || strcmp(path, KEYS_PATH "/") == 0) {
        if (strcmp(method, "GET") == 0) return list_keys(keys, out, out_len, e);
        if (strcmp(method, "POST") == 0) return create_key(keys, policy, body, body_len, actor, out, out_len, e);
    } else if (strncmp(path, KEYS_PATH "/", base + 1) == 0 && strcmp(method, "DELETE") == 0) {
        const char *id = path + base + 1;
        if (!apikeys_valid_word(id, APIKEY_ID_MAX)) {
            gw_error_set(e, 404, "invalid_request_error", NULL, "key_not_found", "no such key");
            return -1;
        }
        return revoke_key(keys, id, actor, out, out_len, e);
    }
    gw_error_set(e, 405, "invalid_request_error", NULL, "method_not_allowed",
                 "%s takes GET and POST; %s/{id} takes DELETE", KEYS_PATH, KEYS_PATH);
    return -1;
}
